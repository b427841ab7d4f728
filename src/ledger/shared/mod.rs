//! A ledger many shippers share: each object's entry in one [`Table`] row, changed only by
//! conditional writes, with a lease on the objects being shipped.
//!
//! The rules, in the way the Kinesis Client Library shares shards:
//! - A **claim** takes a row that has no owner, or whose owner's lease expired: the lease
//!   counter stood still for the lease time on this shipper's own clock (no clock is
//!   compared with another's). The claim bumps the counter; the holder renews it.
//! - **Progress is shared**: a commit raises the row's position (never lowers it), so
//!   whoever ships the object next resumes after the events any shipper committed. A
//!   stale owner's commit still counts: its host acknowledged those events.
//! - A commit that finishes the object, a release and a graceful stop give the lease up at
//!   once, so the next shipper does not wait out the lease time.
//! - Done rows expire by the store's TTL a lookback after they finished; failed rows stay
//!   with their reason until put back in line.
//!
//! Every write names the version it read ([`Table::put`]); a conflict re-reads and decides
//! again, so two shippers never both believe they hold an object.

mod ahead;
mod claims;
mod counts;
mod dynamo;
mod findings;
mod items;
mod leases;
mod prefixes;
mod table;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use counts::Counts;
use counts::bump;
pub use dynamo::DynamoTable;
pub use table::{Hook, Hooked, LeaseKind, LeaseRow, MemTable, Put, Row, Table, TableError};

use super::entry::{Entry, Status};
use super::{Backoff, Claimable, Committed, Honour, LedgerError};
use crate::ledger::mark::Mark;

/// Conflicting writes in a row before a change gives up (each is a re-read and a retry;
/// more than a few means the row is fought over, which the rules should not allow).
const MAX_TRIES: usize = 8;

/// A monotonic clock: leases are judged on it, never on wall time.
pub type Monotonic = Arc<dyn Fn() -> Duration + Send + Sync>;

/// A lease seen held by another shipper, as first observed here.
#[derive(Debug, Clone)]
struct Seen {
    owner: String,
    lease: u64,
    since: Duration,
}

/// What this shipper holds: the row as it last wrote it (saves a read before the next
/// write; a stale copy only costs a conflict and a re-read), and when.
#[derive(Debug, Clone)]
struct Held {
    row: Row,
    written: Duration,
}

/// What one decision over a row came to.
enum Step<T> {
    Keep(T),
    Write(Row, T),
}

/// The shared ledger's rules over a [`Table`].
pub struct SharedLedger {
    table: Box<dyn Table>,
    /// What errors call the store (the table's name).
    name: String,
    /// This shipper's owner id: host, process and a random part, unique per start.
    me: String,
    lease_time: Duration,
    /// How long done rows are kept (the lookback).
    keep_done: u32,
    clock: Monotonic,
    held: Mutex<HashMap<String, Held>>,
    seen: Mutex<HashMap<String, Seen>>,
    /// Rows just read by [`SharedLedger::entry`], taken by the claim that usually follows
    /// (an SQS message is looked at, then claimed): one read per object, not two. A row
    /// changed in between only costs a conflict and a re-read.
    recent: Mutex<HashMap<String, Row>>,
    /// Set by a graceful stop's [`SharedLedger::let_go_all`]: no claim after it, so none
    /// outlives the stop and waits out the lease time.
    closing: std::sync::atomic::AtomicBool,
    /// Objects whose claim is under way here: a second claim of one at once (a requeue and
    /// a message) passes instead of racing the first to the table, where both would win.
    claiming: Mutex<std::collections::HashSet<String>>,
    /// What listing with this ledger keeps: prefix leases, heartbeats, finished keys.
    listing: Option<prefixes::Listing>,
    pub counts: Counts,
}

/// Rows kept in `recent` at most (claims take them at once; this only bounds a leak).
const RECENT_LIMIT: usize = 10_000;

impl std::fmt::Debug for SharedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLedger")
            .field("table", &self.name)
            .field("owner", &self.me)
            .finish()
    }
}

impl SharedLedger {
    pub fn new(
        table: Box<dyn Table>,
        name: impl Into<String>,
        lease_time: Duration,
        keep_done: u32,
        clock: Option<Monotonic>,
    ) -> Self {
        let clock = clock.unwrap_or_else(|| {
            let start = Instant::now();
            Arc::new(move || start.elapsed())
        });
        Self {
            table,
            name: name.into(),
            me: owner_id(),
            lease_time,
            keep_done,
            clock,
            held: Mutex::default(),
            seen: Mutex::default(),
            recent: Mutex::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            claiming: Mutex::default(),
            listing: None,
            counts: Counts::default(),
        }
    }

    /// Lists the bucket too (listing or hybrid mode): prefixes are split among the
    /// shippers by lease, and done rows under them are forgotten by the listings' forget
    /// lines instead of by time (see [`prefixes`]).
    pub fn listing(mut self, bucket: &str) -> Self {
        self.listing = Some(prefixes::Listing::of(bucket));
        self
    }

    /// This shipper's owner id, as written in the rows it holds.
    pub fn owner(&self) -> &str {
        &self.me
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, e: TableError) -> LedgerError {
        LedgerError::Shared {
            table: self.name.clone(),
            reason: e.0,
        }
    }

    /// Whether another shipper's lease on a row has expired by this shipper's clock: its
    /// counter unchanged since first seen here, for the lease time.
    fn lease_expired(&self, id: &str, owner: &str, lease: u64) -> bool {
        let now = (self.clock)();
        let mut seen = self.seen();
        match seen.get(id) {
            Some(s) if s.owner == owner && s.lease == lease => {
                now.saturating_sub(s.since) >= self.lease_time
            }
            _ => {
                seen.insert(
                    id.to_string(),
                    Seen {
                        owner: owner.to_string(),
                        lease,
                        since: now,
                    },
                );
                false
            }
        }
    }

    /// Reads the row (or takes this shipper's copy), decides, and writes if the decision
    /// says so, naming the version read; on a conflict reads again and decides again.
    fn change<T>(
        &self,
        id: &str,
        mut decide: impl FnMut(Option<&Row>) -> Step<T>,
    ) -> Result<T, LedgerError> {
        let mut copy = self.held().get(id).map(|h| h.row.clone());
        if copy.is_none() {
            copy = self
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
        for _ in 0..MAX_TRIES {
            let current = match copy.take() {
                Some(r) => Some(r),
                None => {
                    bump(&self.counts.reads);
                    let fresh = self.table.get(id).map_err(|e| self.err(e))?;
                    self.refresh(id, fresh.as_ref());
                    fresh
                }
            };
            match decide(current.as_ref()) {
                Step::Keep(t) => return Ok(t),
                Step::Write(mut row, t) => {
                    let expected = current.as_ref().map(|r| r.version);
                    row.version = expected.map_or(1, |v| v + 1);
                    bump(&self.counts.writes);
                    if self
                        .table
                        .put(id, expected, &row)
                        .map_err(|e| self.err(e))?
                    {
                        let mut held = self.held();
                        if row.owner.as_deref() == Some(self.me.as_str()) {
                            held.insert(
                                id.to_string(),
                                Held {
                                    row,
                                    written: (self.clock)(),
                                },
                            );
                        } else {
                            held.remove(id);
                        }
                        return Ok(t);
                    }
                    bump(&self.counts.conflicts);
                }
            }
        }
        Err(self.err(TableError(format!(
            "{id}: {MAX_TRIES} conflicting writes in a row"
        ))))
    }

    /// Keeps this shipper's copy of a row it holds up to date with a fresh read, and drops
    /// it when the read shows the row is no longer this shipper's.
    fn refresh(&self, id: &str, fresh: Option<&Row>) {
        let mut held = self.held();
        match fresh {
            Some(r) if self.mine(r) => {
                if let Some(h) = held.get_mut(id) {
                    h.row = r.clone();
                }
            }
            _ => {
                held.remove(id);
            }
        }
    }

    fn mine(&self, row: &Row) -> bool {
        row.owner.as_deref() == Some(self.me.as_str())
    }

    pub fn first_start_or(&self, now: u32) -> Result<u32, LedgerError> {
        let v = self
            .table
            .setting_or("first_start", u64::from(now))
            .map_err(|e| self.err(e))?;
        Ok(u32::try_from(v).unwrap_or(now))
    }

    /// The entry of `id`: this shipper's copy while it holds the object (only a fenced-out
    /// owner's late commit can be newer, and that costs a repeat, never a loss), else read.
    pub fn entry(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        if let Some(h) = self.held().get(id) {
            return Ok(Some(h.row.entry.clone()));
        }
        bump(&self.counts.reads);
        let row = self.table.get(id).map_err(|e| self.err(e))?;
        if let Some(r) = &row {
            if prefixes::is_done(&r.entry) {
                self.remember_done(id);
            }
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= RECENT_LIMIT {
                recent.clear();
            }
            recent.insert(id.to_string(), r.clone());
        }
        Ok(row.map(|r| r.entry))
    }

    pub fn release(
        &self,
        id: &str,
        reason: &str,
        backoff: Backoff,
        now: u32,
    ) -> Result<u32, LedgerError> {
        let released = self.release_row(id, reason, backoff, now);
        // Let go here even when the write failed (see `let_go`).
        self.held().remove(id);
        released
    }

    fn release_row(
        &self,
        id: &str,
        reason: &str,
        backoff: Backoff,
        now: u32,
    ) -> Result<u32, LedgerError> {
        self.change(id, |row| {
            let mut row = row.cloned().unwrap_or_else(|| Row {
                version: 0,
                entry: Entry::open(0, (0, 0), now),
                owner: None,
                lease: 0,
                expires: None,
            });
            if row.entry.is_finished() {
                return Step::Keep(0);
            }
            let wait = row.entry.back_off(reason, backoff, now);
            if self.mine(&row) {
                row.owner = None;
            }
            Step::Write(row, wait)
        })
    }

    pub fn commit(
        &self,
        marks: &[Mark],
        now: u32,
        abandoned: Backoff,
    ) -> Result<Committed, LedgerError> {
        let mut out = Committed::default();
        for m in marks {
            out.events += m.events;
            let end = self.change(&m.id, |row| {
                let mut row = row.cloned().unwrap_or_else(|| Row {
                    version: 0,
                    entry: Entry::open(0, (0, 0), now),
                    owner: Some(self.me.clone()),
                    lease: 1,
                    expires: None,
                });
                if row.entry.is_finished() {
                    return Step::Keep(None);
                }
                if m.end.is_none() && row.entry.position >= m.position {
                    return Step::Keep(None);
                }
                let ended = row.entry.apply(m, now, abandoned);
                if ended == Some(Status::Done) {
                    row.expires = self.done_expires(&m.id, now);
                }
                if self.mine(&row) {
                    if m.end.is_some() {
                        row.owner = None;
                    } else {
                        // The holder's commits renew its lease: others judge it by the
                        // counter alone.
                        row.lease += 1;
                    }
                }
                Step::Write(row, ended)
            })?;
            match end {
                Some(Status::Done) => {
                    self.remember_done(&m.id);
                    out.done += 1;
                }
                Some(Status::Failed) => out.failed += 1,
                _ => {}
            }
        }
        Ok(out)
    }

    pub fn retry(&self, ids: Option<&[String]>, now: u32) -> Result<usize, LedgerError> {
        let targets: Vec<String> = match ids {
            Some(ids) => ids.to_vec(),
            None => self
                .table
                .scan("")
                .map_err(|e| self.err(e))?
                .into_iter()
                .filter(|(_, r)| r.entry.status == Status::Failed)
                .map(|(id, _)| id)
                .collect(),
        };
        let mut n = 0;
        for id in targets {
            let put_back = self.change(&id, |row| match row {
                Some(r) if r.entry.status == Status::Failed => {
                    let mut row = r.clone();
                    row.entry.put_back(now);
                    row.owner = None;
                    row.expires = None;
                    Step::Write(row, true)
                }
                _ => Step::Keep(false),
            })?;
            n += usize::from(put_back);
        }
        Ok(n)
    }

    /// Open rows that are due and that no live lease holds (`inflight`: claims here).
    pub fn due(
        &self,
        now: u32,
        limit: usize,
        inflight: &HashSet<Arc<str>>,
    ) -> Result<Vec<(String, Entry)>, LedgerError> {
        // The filter runs while the rows are paged through, so rows other shippers hold
        // (every object in flight anywhere is open) never crowd out the ones due here.
        let mut eligible = |id: &str, r: &Row| {
            !inflight.contains(id)
                && match r.owner.as_deref() {
                    None => true,
                    Some(o) => o == self.me || self.lease_expired(id, o, r.lease),
                }
        };
        bump(&self.counts.queries);
        let rows = self
            .table
            .open_due(now, limit, &mut eligible)
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().map(|(id, r)| (id, r.entry)).collect())
    }

    pub fn entries_under(&self, prefix: &str) -> Result<Vec<(String, Entry)>, LedgerError> {
        Ok(self
            .table
            .scan(prefix)
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|(id, r)| (id, r.entry))
            .collect())
    }

    pub fn open_count(&self) -> Result<u64, LedgerError> {
        let rows = self
            .table
            .open_due(u32::MAX, usize::MAX, &mut |_, _| true)
            .map_err(|e| self.err(e))?;
        Ok(rows.len() as u64)
    }

    /// Open rows that no other live shipper holds: what this shipper could still ship (the
    /// count `--once` reports at its end).
    pub fn open_unheld(&self) -> Result<u64, LedgerError> {
        bump(&self.counts.queries);
        let rows = self
            .table
            .open_due(u32::MAX, usize::MAX, &mut |_, r| {
                r.owner.as_deref().is_none_or(|o| o == self.me)
            })
            .map_err(|e| self.err(e))?;
        Ok(rows.len() as u64)
    }

    /// The row of `id` as stored (tests, `status`).
    pub fn row(&self, id: &str) -> Result<Option<Row>, LedgerError> {
        self.table.get(id).map_err(|e| self.err(e))
    }
}

/// Host name, process id and a random part: unique per start, readable in the table.
fn owner_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    // `RandomState` is seeded from the OS for each process: random enough to tell two
    // starts of the same process id apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{host}-{}-{:08x}", std::process::id(), h.finish() as u32)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod prefix_tests;
