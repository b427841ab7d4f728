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

mod entry;
mod legacy;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

pub use entry::{Entry, Status};

use crate::engine::handoff::{End, Mark};

/// Object id -> encoded [`Entry`].
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Ids of open entries, for re-queueing them without a scan of every entry.
const OPEN: TableDefinition<&str, ()> = TableDefinition::new("open");
/// Listed prefix id -> its low watermark (an object id).
const WATERMARKS: TableDefinition<&str, &str> = TableDefinition::new("watermarks");
/// `group \0 secs(10 digits) \0 id`: when entries of a group may be forgotten.
const TIMES: TableDefinition<&str, ()> = TableDefinition::new("times");
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
}

/// How an object that failed transiently is retried: the wait doubles from `first` after
/// each failure in a row, up to `cap` (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: u32,
    pub cap: u32,
}

impl Backoff {
    /// Throttling, timeouts, broken connections: seconds to a quarter of an hour.
    pub const TRANSIENT: Backoff = Backoff { first: 5, cap: 900 };
    /// Access denied and other settings problems: minutes to an hour, since permissions
    /// and keys get fixed without a restart.
    pub const DENIED: Backoff = Backoff {
        first: 300,
        cap: 3600,
    };

    /// Seconds to wait after the `attempt`-th failure in a row (1-based).
    pub fn secs(self, attempt: u32) -> u32 {
        self.first
            .saturating_mul(1 << attempt.saturating_sub(1).min(12))
            .min(self.cap.max(self.first))
    }
}

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
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens the ledger at `path` (created when missing), or one in memory. A JSON state
    /// file of an earlier release is converted; `bucket` names the bucket its listing
    /// positions belong to.
    pub fn open(path: Option<&Path>, bucket: Option<&str>, now: u32) -> Result<Self, LedgerError> {
        let Some(path) = path else {
            let db = Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| store_err(Path::new(":memory:"), e))?;
            return Self::init(db, None, None);
        };
        let lock = lock(path)?;
        let io = |source| LedgerError::Io {
            path: path.into(),
            source,
        };
        // A conversion that stopped between its two renames: the old file is already kept
        // aside and the converted ledger is complete; finish it.
        let converting = with_suffix(path, ".converting");
        if !path.exists() && converting.exists() && with_suffix(path, ".v1.json").exists() {
            fs::rename(&converting, path).map_err(io)?;
            sync_dir(path).map_err(io)?;
        }
        let old = match fs::read(path) {
            Ok(bytes) if legacy::is_json(&bytes) => Some(legacy::parse(&bytes).map_err(
                |reason| LedgerError::Corrupt {
                    path: path.into(),
                    reason,
                },
            )?),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        if let Some(old) = old {
            let fresh = with_suffix(path, ".converting");
            let _ = fs::remove_file(&fresh);
            let db = Database::create(&fresh).map_err(|e| store_err(&fresh, e))?;
            let ledger = Self::init(db, None, None)?;
            ledger.import(&old, bucket, now)?;
            drop(ledger);
            fs::rename(path, with_suffix(path, ".v1.json")).map_err(io)?;
            fs::rename(&fresh, path).map_err(io)?;
            sync_dir(path).map_err(io)?;
        }
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(LedgerError::InUse { path: path.into() });
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => return Err(io(e)),
            Err(e) => {
                return Err(LedgerError::Corrupt {
                    path: path.into(),
                    reason: e.to_string(),
                });
            }
        };
        let mut ledger = Self::init(db, Some(path.into()), Some(lock))?;
        // Pages freed by forgetting are reused, but the file only shrinks by compaction:
        // once per start, while nothing else reads it (a second per million entries).
        ledger.compact()?;
        Ok(ledger)
    }

    fn init(
        db: Database,
        path: Option<PathBuf>,
        lock: Option<fs::File>,
    ) -> Result<Self, LedgerError> {
        let ledger = Self {
            db,
            path,
            inflight: Mutex::default(),
            _lock: lock,
        };
        // Creates the tables and proves the location is writable before any data moves.
        ledger.write(|txn| {
            txn.open_table(OBJECTS)?;
            txn.open_table(OPEN)?;
            txn.open_table(WATERMARKS)?;
            txn.open_table(TIMES)?;
            txn.open_table(FLOORS)?;
            let mut meta = txn.open_table(META)?;
            let version = meta.get("version")?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("version", FORMAT_VERSION)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(v) => return Err(Fail::Refused(format!("format version {v}"))),
            }
            Ok(())
        })?;
        Ok(ledger)
    }

    /// Writes a converted JSON state in one transaction.
    fn import(
        &self,
        old: &legacy::StateV1,
        bucket: Option<&str>,
        now: u32,
    ) -> Result<(), LedgerError> {
        self.write(|txn| {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut open = txn.open_table(OPEN)?;
            let mut meta = txn.open_table(META)?;
            if let Some(first) = old.first_start {
                meta.insert("first_start", u64::from(first))?;
            }
            let mut put = |id: &str, e: Entry| -> Result<(), Fail> {
                if e.status == Status::Open {
                    open.insert(id, ())?;
                }
                objects.insert(id, e.encode().as_slice())?;
                Ok(())
            };
            for id in &old.done {
                put(
                    id,
                    Entry {
                        status: Status::Done,
                        ..Entry::open(0, (0, 0), now)
                    },
                )?;
            }
            for (id, reason) in &old.failed {
                put(
                    id,
                    Entry {
                        status: Status::Failed,
                        reason: reason.clone(),
                        ..Entry::open(0, (0, 0), now)
                    },
                )?;
            }
            for (id, position) in &old.progress {
                put(
                    id,
                    Entry {
                        position: *position,
                        ..Entry::open(0, (0, 0), now)
                    },
                )?;
            }
            drop(objects);
            drop(open);
            if let Some(bucket) = bucket {
                let mut floors = txn.open_table(FLOORS)?;
                for (prefix, day) in &old.newest_days {
                    // The old listing resumed one day before the newest day it saw, and had
                    // forgotten what was finished before: that is where listings start.
                    let Some(days) = crate::layout::key_day(&format!("{day}/")) else {
                        continue;
                    };
                    let id = crate::object::s3_id(bucket, prefix);
                    let floor = format!("{id}{}", crate::layout::day_path(days - 1));
                    floors.insert(id.as_str(), floor.as_str())?;
                }
            }
            Ok(())
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        self.write_with(Durability::Immediate, f)
    }

    /// A transaction whose loss in a crash costs nothing but a repeat of work: claims
    /// (listings and redeliveries find the objects again) and backoffs. It reaches the disk
    /// with the next durable commit.
    fn write_lazy<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        self.write_with(Durability::None, f)
    }

    fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        let path = self.path.as_deref().unwrap_or(Path::new(":memory:"));
        let mut txn = self.db.begin_write().map_err(|e| store_err(path, e))?;
        txn.set_durability(durability)
            .map_err(|e| LedgerError::Store {
                path: path.into(),
                reason: e.to_string(),
            })?;
        let out = f(&txn).map_err(|e| e.into_error(path))?;
        txn.commit().map_err(|e| store_err(path, e))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        let path = self.path.as_deref().unwrap_or(Path::new(":memory:"));
        let txn = self.db.begin_read().map_err(|e| store_err(path, e))?;
        f(&txn).map_err(|e| e.into_error(path))
    }

    fn inflight(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the first-start time if it is not set yet and returns the value in force.
    pub fn first_start_or(&self, now: u32) -> Result<u32, LedgerError> {
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
        let mut inflight = self.inflight();
        let claimed = self.write_lazy(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut open = txn.open_table(OPEN)?;
            let mut times = txn.open_table(TIMES)?;
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
                            times.insert(time_key(group, secs, o.id).as_str(), ())?;
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
        let wait = self.write_lazy(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut e = table
                .get(id)?
                .and_then(|v| Entry::decode(v.value()))
                .unwrap_or_else(|| Entry::open(0, (0, 0), now));
            if e.is_finished() {
                return Ok(0);
            }
            e.attempts = e.attempts.saturating_add(1);
            let wait = backoff.secs(e.attempts);
            e.not_before = now.saturating_add(wait);
            e.reason = reason.to_string();
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
        self.write(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut open = txn.open_table(OPEN)?;
            let floors = txn.open_table(FLOORS)?;
            for m in marks {
                out.events += m.events;
                let mut e = table
                    .get(&*m.id)?
                    .and_then(|v| Entry::decode(v.value()))
                    .unwrap_or_else(|| Entry::open(0, (0, 0), now));
                if e.is_finished() {
                    continue;
                }
                e.position = e.position.max(m.position);
                match &m.end {
                    None => {}
                    Some(End::Done) => {
                        e.status = Status::Done;
                        e.reason.clear();
                        e.changed_at = now;
                        out.done += 1;
                    }
                    Some(End::Failed(reason)) => {
                        e.status = Status::Failed;
                        e.reason = reason.clone();
                        e.changed_at = now;
                        out.failed += 1;
                    }
                    Some(End::Abandoned(reason)) => {
                        e.attempts = e.attempts.saturating_add(1);
                        e.not_before = now.saturating_add(abandoned.secs(e.attempts));
                        e.reason = reason.clone();
                    }
                }
                if e.is_finished() {
                    open.remove(&*m.id)?;
                }
                // Done below its prefix's forget line (a retry from the ledger that ended
                // after the watermark had passed it): no listing returns it again, so it is
                // forgotten now, as the watermark forgot its neighbours.
                if e.status == Status::Done && below_forget_line(&floors, &m.id)? {
                    table.remove(&*m.id)?;
                    continue;
                }
                table.insert(&*m.id, e.encode().as_slice())?;
            }
            Ok(())
        })?;
        let mut inflight = self.inflight();
        for m in marks.iter().filter(|m| m.end.is_some()) {
            inflight.remove(&m.id);
        }
        Ok(out)
    }

    /// Puts failed objects back in line (status open, position kept, no backoff). `None`
    /// puts back every failed object. Returns how many.
    pub fn retry(&self, ids: Option<&[String]>, now: u32) -> Result<usize, LedgerError> {
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
                if e.status != Status::Failed {
                    continue;
                }
                e.status = Status::Open;
                e.attempts = 0;
                e.not_before = 0;
                e.changed_at = now;
                e.reason = format!("put back in line (was: {})", e.reason);
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
        self.read(|txn| {
            let table = txn.open_table(OBJECTS)?;
            ids.iter()
                .map(|id| Ok(table.get(*id)?.and_then(|v| Entry::decode(v.value()))))
                .collect()
        })
    }

    /// The low watermark of a listed prefix.
    pub fn watermark(&self, prefix_id: &str) -> Result<Option<String>, LedgerError> {
        self.read(|txn| {
            let t = txn.open_table(WATERMARKS)?;
            Ok(t.get(prefix_id)?.map(|v| v.value().to_string()))
        })
    }

    /// Every watermark, by prefix id.
    pub fn watermarks(&self) -> Result<Vec<(String, String)>, LedgerError> {
        self.read(|txn| {
            let t = txn.open_table(WATERMARKS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value().to_string()));
            }
            Ok(out)
        })
    }

    /// Moves a prefix's watermark forward (never back) and forgets the finished entries
    /// below `forget_below` under the prefix: no listing returns them again. Failed and
    /// open entries are kept.
    pub fn advance(
        &self,
        prefix_id: &str,
        to: &str,
        forget_below: &str,
    ) -> Result<(), LedgerError> {
        self.write(|txn| {
            let mut marks = txn.open_table(WATERMARKS)?;
            let current = marks.get(prefix_id)?.map(|v| v.value().to_string());
            if current.as_deref().is_none_or(|c| c < to) {
                marks.insert(prefix_id, to)?;
            }
            if forget_below > prefix_id {
                let mut table = txn.open_table(OBJECTS)?;
                table.retain_in(prefix_id..forget_below, |_, v| {
                    Entry::decode(v).is_none_or(|e| e.status != Status::Done)
                })?;
                let mut floors = txn.open_table(FLOORS)?;
                let floor = floors.get(prefix_id)?.map(|v| v.value().to_string());
                if floor.as_deref().is_none_or(|f| f < forget_below) {
                    floors.insert(prefix_id, forget_below)?;
                }
            }
            Ok(())
        })
    }

    /// The forget line of a listed prefix: an id below which listings never start.
    pub fn floor(&self, prefix_id: &str) -> Result<Option<String>, LedgerError> {
        self.read(|txn| {
            let t = txn.open_table(FLOORS)?;
            Ok(t.get(prefix_id)?.map(|v| v.value().to_string()))
        })
    }

    /// The forget line of a time group: listings skip objects that landed before it.
    pub fn time_floor(&self, group: &str) -> Result<Option<u32>, LedgerError> {
        self.read(|txn| {
            let t = txn.open_table(FLOORS)?;
            Ok(t.get(time_mark(group).as_str())?
                .and_then(|v| v.value().parse().ok()))
        })
    }

    /// The time watermark of a group (flat listings, folders): every wanted object modified
    /// at or before it is finished.
    pub fn time_watermark(&self, group: &str) -> Result<Option<u32>, LedgerError> {
        self.watermark(&time_mark(group))
            .map(|w| w.and_then(|s| s.parse().ok()))
    }

    /// Moves a group's time watermark forward (never back).
    pub fn advance_time(&self, group: &str, to: u32) -> Result<(), LedgerError> {
        let key = time_mark(group);
        self.write(|txn| {
            let mut marks = txn.open_table(WATERMARKS)?;
            let current = marks
                .get(key.as_str())?
                .and_then(|v| v.value().parse::<u32>().ok());
            if current.is_none_or(|c| c < to) {
                marks.insert(key.as_str(), format!("{to:010}").as_str())?;
            }
            Ok(())
        })
    }

    /// Forgets the done entries of a time group whose time is before `before`, and raises
    /// the group's forget line to it.
    pub fn forget_older(&self, group: &str, before: u32) -> Result<usize, LedgerError> {
        self.write(|txn| {
            let mut floors = txn.open_table(FLOORS)?;
            let key = time_mark(group);
            let floor = floors
                .get(key.as_str())?
                .and_then(|v| v.value().parse::<u32>().ok());
            if floor.is_none_or(|f| f < before) {
                floors.insert(key.as_str(), format!("{before:010}").as_str())?;
            }
            drop(floors);
            let mut times = txn.open_table(TIMES)?;
            let mut table = txn.open_table(OBJECTS)?;
            let lo = format!("{group}\0");
            let hi = time_key(group, before, "");
            let mut stale = Vec::new();
            for row in times.range(lo.as_str()..hi.as_str())? {
                let (k, _) = row?;
                stale.push(k.value().to_string());
            }
            let mut n = 0;
            for k in stale {
                let id = k.rsplit_once('\0').map_or("", |(_, id)| id);
                let done = table
                    .get(id)?
                    .and_then(|v| Entry::decode(v.value()))
                    .is_none_or(|e| e.status == Status::Done);
                if done {
                    table.remove(id)?;
                    times.remove(k.as_str())?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// Forgets the done entries whose id starts with `id_prefix` and is not in `present`
    /// (a folder's files that are gone). Returns how many.
    pub fn forget_done_absent(
        &self,
        id_prefix: &str,
        present: &HashSet<&str>,
    ) -> Result<usize, LedgerError> {
        self.write_lazy(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut gone = Vec::new();
            for row in table.range(id_prefix..)? {
                let (k, v) = row?;
                let id = k.value();
                if !id.starts_with(id_prefix) {
                    break;
                }
                let done = Entry::decode(v.value()).is_some_and(|e| e.status == Status::Done);
                if done && !present.contains(id) {
                    gone.push(id.to_string());
                }
            }
            for id in &gone {
                table.remove(id.as_str())?;
            }
            Ok(gone.len())
        })
    }

    /// Open entries, from the index of them (cheap, unlike [`Ledger::counts`]).
    pub fn open_count(&self) -> Result<u64, LedgerError> {
        self.read(|txn| Ok(txn.open_table(OPEN)?.len()?))
    }

    /// Entries in the ledger, by status: (open, done, failed).
    pub fn counts(&self) -> Result<(u64, u64, u64), LedgerError> {
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

    /// Gives the file's free pages back to the file system (pages freed by forgetting are
    /// reused by later writes, but the file does not shrink by itself). Needs the ledger to
    /// itself: run at start-up, before anything else reads it.
    pub fn compact(&mut self) -> Result<bool, LedgerError> {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(":memory:"));
        self.db.compact().map_err(|e| LedgerError::Store {
            path,
            reason: e.to_string(),
        })
    }

    /// Lets a claim go without writing anything (a commit that failed, a task that died):
    /// the object is found again by the next scan or redelivery.
    pub fn let_go(&self, id: &str) {
        self.inflight().remove(id);
    }

    /// Drops this run's claims (a simulated crash in tests; the process dying does the same).
    pub fn forget_claims(&self) {
        self.inflight().clear();
    }
}

/// The watermark row of a time group (not an object id: those start `s3://` or `dir:`).
fn time_mark(group: &str) -> String {
    format!("time:{group}")
}

/// The key of a time-index row.
fn time_key(group: &str, secs: u32, id: &str) -> String {
    format!("{group}\0{secs:010}\0{id}")
}

/// A failure inside a transaction.
enum Fail {
    Store(String),
    Refused(String),
}

impl<E: Into<redb::Error>> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail::Store(e.into().to_string())
    }
}

impl Fail {
    fn into_error(self, path: &Path) -> LedgerError {
        match self {
            Fail::Store(reason) => LedgerError::Store {
                path: path.into(),
                reason,
            },
            Fail::Refused(reason) => LedgerError::Corrupt {
                path: path.into(),
                reason,
            },
        }
    }
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> LedgerError {
    LedgerError::Store {
        path: path.into(),
        reason: e.into().to_string(),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// An exclusive lock on `<db>.lock`, held while the ledger is open: two instances on one
/// state would undo each other's work. (redb refuses a second opener too; this lock gives
/// the clearer message, and the folder is created here.)
fn lock(path: &Path) -> Result<fs::File, LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(with_suffix(path, ".lock"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LedgerError::InUse { path: path.into() }),
        Err(fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Whether `id` lies below the forget line of the listed prefix it is under. Region
/// prefixes do not nest, so the prefix an id is under is the last forget line key at or
/// before it.
fn below_forget_line(
    floors: &redb::Table<'_, &str, &str>,
    id: &str,
) -> Result<bool, redb::StorageError> {
    let Some(row) = floors.range(..=id)?.next_back() else {
        return Ok(false);
    };
    let (prefix, line) = row?;
    Ok(id.starts_with(prefix.value()) && id < line.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(id: &str, events: u64, position: u64, end: Option<End>) -> Mark {
        Mark {
            id: id.into(),
            events,
            position,
            end,
            ..Mark::default()
        }
    }

    fn claim(l: &Ledger, ids: &[&str], now: u32) -> Vec<String> {
        let objs: Vec<Claimable<'_>> = ids
            .iter()
            .map(|id| Claimable {
                id,
                size: 1,
                modified: (now, 0),
                forget_by: None,
            })
            .collect();
        l.claim(&objs, now, Honour::Backoff)
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn survives_reopen_with_every_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let l = Ledger::open(Some(&path), None, 100).unwrap();
        assert_eq!(l.first_start_or(100).unwrap(), 100);
        claim(&l, &["s3://b/k1", "s3://b/k2", "s3://b/k3"], 100);
        l.commit(
            &[
                mark("s3://b/k1", 10, 10, None),
                mark("s3://b/k2", 5, 5, Some(End::Done)),
                mark("s3://b/k3", 2, 2, Some(End::Failed("gzip: bad".into()))),
            ],
            101,
            Backoff::TRANSIENT,
        )
        .unwrap();
        drop(l);
        let l = Ledger::open(Some(&path), None, 200).unwrap();
        assert_eq!(l.first_start_or(200).unwrap(), 100, "first start kept");
        assert_eq!(l.progress("s3://b/k1"), 10);
        assert!(l.is_finished("s3://b/k2") && l.is_finished("s3://b/k3"));
        let failed = l.entry("s3://b/k3").unwrap().unwrap();
        assert_eq!((failed.reason.as_str(), failed.position), ("gzip: bad", 2));
        // The crash-open object is due again; finished ones are not.
        let due: Vec<String> = l.due(200, 10).unwrap().into_iter().map(|d| d.0).collect();
        assert_eq!(due, ["s3://b/k1"]);
    }

    #[test]
    fn claims_skip_finished_inflight_and_backed_off_objects() {
        let l = Ledger::open(None, None, 0).unwrap();
        assert_eq!(claim(&l, &["a", "b"], 10), ["a", "b"]);
        assert!(claim(&l, &["a"], 10).is_empty(), "claimed once");
        l.commit(&[mark("a", 1, 1, Some(End::Done))], 11, Backoff::TRANSIENT)
            .unwrap();
        assert!(claim(&l, &["a"], 12).is_empty(), "done");
        let wait = l
            .release("b", "503 SlowDown", Backoff::TRANSIENT, 20)
            .unwrap();
        assert_eq!(wait, 5);
        assert!(claim(&l, &["b"], 24).is_empty(), "backing off");
        assert_eq!(claim(&l, &["b"], 25), ["b"]);
        let wait = l
            .release("b", "503 SlowDown", Backoff::TRANSIENT, 25)
            .unwrap();
        assert_eq!(wait, 10, "the backoff grows");
        assert_eq!(Backoff::DENIED.secs(1), 300);
        assert_eq!(Backoff::DENIED.secs(20), 3600);
    }

    #[test]
    fn a_failed_object_keeps_its_position_and_resumes_when_put_back() {
        let l = Ledger::open(None, None, 0).unwrap();
        claim(&l, &["x"], 1);
        l.commit(&[mark("x", 3, 3, None)], 2, Backoff::TRANSIENT)
            .unwrap();
        l.commit(
            &[mark("x", 0, 3, Some(End::Failed("truncated".into())))],
            3,
            Backoff::TRANSIENT,
        )
        .unwrap();
        assert!(claim(&l, &["x"], 4).is_empty());
        assert_eq!(l.retry(None, 5).unwrap(), 1);
        assert_eq!(claim(&l, &["x"], 6), ["x"]);
        assert_eq!(l.progress("x"), 3, "the good prefix is not shipped again");
    }

    #[test]
    fn watermarks_only_move_forward_and_forget_done_entries_below() {
        let l = Ledger::open(None, None, 0).unwrap();
        let p = "s3://b/AWSLogs/1/CloudTrail/r/";
        let k = |d: &str| format!("{p}2023/07/{d}/x.json.gz");
        claim(&l, &[&k("08"), &k("09"), &k("10")], 1);
        l.commit(
            &[
                mark(&k("08"), 1, 1, Some(End::Done)),
                mark(&k("09"), 1, 1, Some(End::Failed("bad".into()))),
            ],
            2,
            Backoff::TRANSIENT,
        )
        .unwrap();
        l.advance(p, &k("09"), &format!("{p}2023/07/10")).unwrap();
        l.advance(p, &k("08"), p).unwrap();
        assert_eq!(l.watermark(p).unwrap().as_deref(), Some(k("09").as_str()));
        assert!(
            l.entry(&k("08")).unwrap().is_none(),
            "done and below: forgotten"
        );
        assert!(l.is_finished(&k("09")), "failed entries are kept");
        assert!(
            l.entry(&k("10")).unwrap().is_some(),
            "open entries are kept"
        );
    }

    #[test]
    fn an_entry_done_below_the_forget_line_is_forgotten_at_once() {
        // A retry from the ledger that ends after the watermark passed the object: no
        // listing returns it again, so its done entry is not kept.
        let l = Ledger::open(None, None, 0).unwrap();
        let p = "s3://b/AWSLogs/1/CloudTrail/r/";
        let other = "s3://b/AWSLogs/2/CloudTrail/r/";
        let k = |d: &str| format!("{p}2023/07/{d}/x.json.gz");
        let elsewhere = format!("{other}2023/07/01/x.json.gz");
        claim(&l, &[&k("01"), &k("10"), &elsewhere], 1);
        l.advance(p, &k("10"), &format!("{p}2023/07/09")).unwrap();
        l.commit(
            &[
                mark(&k("01"), 1, 1, Some(End::Done)),
                mark(&k("10"), 1, 1, Some(End::Done)),
                mark(&elsewhere, 1, 1, Some(End::Done)),
            ],
            2,
            Backoff::TRANSIENT,
        )
        .unwrap();
        assert!(l.entry(&k("01")).unwrap().is_none(), "below the line");
        assert!(l.is_finished(&k("10")), "above the line: kept");
        assert!(
            l.is_finished(&elsewhere),
            "another prefix's line does not apply"
        );
    }

    #[test]
    fn time_groups_forget_only_old_done_entries() {
        let l = Ledger::open(None, None, 0).unwrap();
        let objs = [
            Claimable {
                id: "s3://b/old",
                size: 1,
                modified: (0, 0),
                forget_by: Some(("sqs", 100)),
            },
            Claimable {
                id: "s3://b/new",
                size: 1,
                modified: (0, 0),
                forget_by: Some(("sqs", 300)),
            },
            Claimable {
                id: "s3://b/open",
                size: 1,
                modified: (0, 0),
                forget_by: Some(("sqs", 100)),
            },
        ];
        l.claim(&objs, 1, Honour::Backoff).unwrap();
        l.commit(
            &[
                mark("s3://b/old", 1, 1, Some(End::Done)),
                mark("s3://b/new", 1, 1, Some(End::Done)),
            ],
            2,
            Backoff::TRANSIENT,
        )
        .unwrap();
        assert_eq!(l.forget_older("sqs", 200).unwrap(), 1);
        assert!(l.entry("s3://b/old").unwrap().is_none());
        assert!(l.is_finished("s3://b/new"));
        assert!(l.entry("s3://b/open").unwrap().is_some());
    }

    #[test]
    fn one_state_file_one_instance_and_other_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let first = Ledger::open(Some(&path), None, 0).unwrap();
        let err = Ledger::open(Some(&path), None, 0).unwrap_err().to_string();
        assert!(err.contains("in use by another running instance"), "{err}");
        drop(first);
        Ledger::open(Some(&path), None, 0).expect("free again once the first is closed");
        let junk = dir.path().join("junk");
        fs::write(
            &junk,
            b"not a database at all, and long enough to be read as one",
        )
        .unwrap();
        let err = Ledger::open(Some(&junk), None, 0).unwrap_err().to_string();
        assert!(err.contains("junk"), "{err}");
        fs::write(&junk, b"{\"done\": [").unwrap();
        let err = Ledger::open(Some(&junk), None, 0).unwrap_err().to_string();
        assert!(err.contains("not a state file"), "{err}");
    }

    #[test]
    fn a_json_state_of_the_earlier_release_is_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            r#"{"version":1,"first_start":1688900000,"done":["s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/a"],"failed":{"s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/f":"gzip: bad"},"progress":{"s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/p":4},"newest_days":{"AWSLogs/1/CloudTrail/r/":"2023/07/10"}}"#,
        )
        .unwrap();
        let l = Ledger::open(Some(&path), Some("b"), 5).unwrap();
        assert_eq!(l.first_start_or(5).unwrap(), 1_688_900_000);
        assert!(l.is_finished("s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/a"));
        assert_eq!(
            l.entry("s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/f")
                .unwrap()
                .unwrap()
                .reason,
            "gzip: bad"
        );
        assert_eq!(l.progress("s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/p"), 4);
        // The old listing's start is the forget line: listings never start before it.
        assert_eq!(
            l.floor("s3://b/AWSLogs/1/CloudTrail/r/")
                .unwrap()
                .as_deref(),
            Some("s3://b/AWSLogs/1/CloudTrail/r/2023/07/09")
        );
        assert_eq!(l.watermark("s3://b/AWSLogs/1/CloudTrail/r/").unwrap(), None);
        drop(l);
        assert!(
            dir.path().join("state.json.v1.json").exists(),
            "the old file is kept"
        );
        let again = Ledger::open(Some(&path), Some("b"), 6).unwrap();
        assert!(again.is_finished("s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/a"));
    }
}
