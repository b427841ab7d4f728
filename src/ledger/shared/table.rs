//! The rows a shared ledger keeps, and the one kind of write it makes: a row replaced only
//! if nobody else wrote it since it was read.
//!
//! [`Table`] is the whole contract between the shared ledger's rules (`mod.rs`) and a store.
//! DynamoDB implements it with conditional writes (`dynamo.rs`); [`MemTable`] implements it
//! in memory, so tests can interleave two shippers' reads and writes step by step, which a
//! test server cannot do (moto evaluates conditions without making them atomic).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::super::entry::{Entry, Status};

/// One object's row: its entry, who holds it, and the counters that order writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Bumped by every write; a write names the version it read, so it fails if another
    /// write came between.
    pub version: u64,
    pub entry: Entry,
    /// The shipper working on the object, while one is.
    pub owner: Option<String>,
    /// The lease counter: bumped by each claim and renewal. Others judge a lease expired
    /// when its counter stood still for the lease time on their own clock, so shippers'
    /// clocks need not agree.
    pub lease: u64,
    /// Unix seconds after which the store may drop the row (DynamoDB's TTL): set on done
    /// entries only, a lookback after they finished.
    pub expires: Option<u32>,
}

impl Row {
    /// Whether the row belongs in the index of open entries (those a requeue looks at).
    pub fn is_open(&self) -> bool {
        self.entry.status == Status::Open
    }
}

/// What a lease row is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseKind {
    /// A listed account/kind/region prefix: who lists it, and where its listing stands.
    Prefix,
    /// A shipper's heartbeat: its version moves while the shipper runs.
    Shipper,
    /// An integrity finding reported (keyed by its text's SHA-256): written once.
    Finding,
}

/// A row that is not an object's: a listed prefix's (who lists it, its watermark and forget
/// line) or a shipper's heartbeat (whose version is the counter the others watch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseRow {
    /// Bumped by every write, as an object row's.
    pub version: u64,
    /// The shipper listing the prefix; on a heartbeat, the shipper while it runs (`None`
    /// once it stopped gracefully).
    pub owner: Option<String>,
    /// The prefix's low watermark: every wanted key up to it is finished.
    pub watermark: Option<String>,
    /// The prefix's forget line: listings never start below it.
    pub floor: Option<String>,
    /// Unix seconds after which the store may drop the row (heartbeats only).
    pub expires: Option<u32>,
}

/// Why the store could not be read or written (a conflict is not an error: see
/// [`Table::put`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TableError(pub String);

/// A store of rows keyed by object id, with conditional replacement.
pub trait Table: Send + Sync + std::fmt::Debug {
    /// The row of `id`, read consistently (after every write acknowledged before).
    fn get(&self, id: &str) -> Result<Option<Row>, TableError>;
    /// Stores `row` under `id` if the stored row's version is `expected` (`None`: no row).
    /// `Ok(false)` when it was not: another writer came first, and nothing was written.
    fn put(&self, id: &str, expected: Option<u64>, row: &Row) -> Result<bool, TableError>;
    /// Open rows whose entry is due (`not_before <= now`) and that `keep` accepts, at
    /// most `limit`: every open row is looked at until `limit` are kept.
    fn open_due(
        &self,
        now: u32,
        limit: usize,
        keep: &mut dyn FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, TableError>;
    /// Every row whose id starts with `prefix`, in id order (operators' commands).
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Row)>, TableError>;
    /// The named setting, stored as `value` if it has none yet.
    fn setting_or(&self, name: &str, value: u64) -> Result<u64, TableError>;
    /// Object rows of one listed prefix (`prefix_id`, the partition) whose id is at or after
    /// `from` and before `below` (no bound when `None`), in id order: one request where a
    /// read per object would be thousands.
    fn rows_under(
        &self,
        prefix_id: &str,
        from: &str,
        below: Option<&str>,
    ) -> Result<Vec<(String, Row)>, TableError>;
    /// The lease row of `id`, read consistently.
    fn get_lease(&self, kind: LeaseKind, id: &str) -> Result<Option<LeaseRow>, TableError>;
    /// Stores a lease row if the stored one's version is `expected`, as [`Table::put`].
    fn put_lease(
        &self,
        kind: LeaseKind,
        id: &str,
        expected: Option<u64>,
        row: &LeaseRow,
    ) -> Result<bool, TableError>;
    /// Every lease row of a kind, read consistently.
    fn leases(&self, kind: LeaseKind) -> Result<Vec<(String, LeaseRow)>, TableError>;
}

/// A [`Table`] in memory. Each call is atomic, as a DynamoDB request is; tests order the
/// calls of several shippers to reproduce races.
#[derive(Debug, Default)]
pub struct MemTable {
    rows: Mutex<BTreeMap<String, Row>>,
    settings: Mutex<BTreeMap<String, u64>>,
    leases: Mutex<BTreeMap<(LeaseKind, String), LeaseRow>>,
    /// Writes accepted, for tests that count requests.
    pub writes: std::sync::atomic::AtomicU64,
}

impl Table for MemTable {
    fn get(&self, id: &str) -> Result<Option<Row>, TableError> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rows.get(id).cloned())
    }

    fn put(&self, id: &str, expected: Option<u64>, row: &Row) -> Result<bool, TableError> {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        if rows.get(id).map(|r| r.version) != expected {
            return Ok(false);
        }
        rows.insert(id.to_string(), row.clone());
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    fn open_due(
        &self,
        now: u32,
        limit: usize,
        keep: &mut dyn FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, TableError> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rows
            .iter()
            .filter(|(_, r)| r.is_open() && r.entry.not_before <= now)
            .filter(|(k, r)| keep(k, r))
            .take(limit)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Row)>, TableError> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rows
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn setting_or(&self, name: &str, value: u64) -> Result<u64, TableError> {
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(*s.entry(name.to_string()).or_insert(value))
    }

    fn rows_under(
        &self,
        prefix_id: &str,
        from: &str,
        below: Option<&str>,
    ) -> Result<Vec<(String, Row)>, TableError> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rows
            .range(from.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix_id) && below.is_none_or(|b| k.as_str() < b))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn get_lease(&self, kind: LeaseKind, id: &str) -> Result<Option<LeaseRow>, TableError> {
        let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(leases.get(&(kind, id.to_string())).cloned())
    }

    fn put_lease(
        &self,
        kind: LeaseKind,
        id: &str,
        expected: Option<u64>,
        row: &LeaseRow,
    ) -> Result<bool, TableError> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (kind, id.to_string());
        if leases.get(&key).map(|r| r.version) != expected {
            return Ok(false);
        }
        leases.insert(key, row.clone());
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    fn leases(&self, kind: LeaseKind) -> Result<Vec<(String, LeaseRow)>, TableError> {
        let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(leases
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), r)| (id.clone(), r.clone()))
            .collect())
    }
}

/// Shippers in one process (tests) share one table through an `Arc`.
impl<T: Table + ?Sized> Table for std::sync::Arc<T> {
    fn get(&self, id: &str) -> Result<Option<Row>, TableError> {
        (**self).get(id)
    }
    fn put(&self, id: &str, expected: Option<u64>, row: &Row) -> Result<bool, TableError> {
        (**self).put(id, expected, row)
    }
    fn open_due(
        &self,
        now: u32,
        limit: usize,
        keep: &mut dyn FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, TableError> {
        (**self).open_due(now, limit, keep)
    }
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Row)>, TableError> {
        (**self).scan(prefix)
    }
    fn setting_or(&self, name: &str, value: u64) -> Result<u64, TableError> {
        (**self).setting_or(name, value)
    }
    fn rows_under(
        &self,
        prefix_id: &str,
        from: &str,
        below: Option<&str>,
    ) -> Result<Vec<(String, Row)>, TableError> {
        (**self).rows_under(prefix_id, from, below)
    }
    fn get_lease(&self, kind: LeaseKind, id: &str) -> Result<Option<LeaseRow>, TableError> {
        (**self).get_lease(kind, id)
    }
    fn put_lease(
        &self,
        kind: LeaseKind,
        id: &str,
        expected: Option<u64>,
        row: &LeaseRow,
    ) -> Result<bool, TableError> {
        (**self).put_lease(kind, id, expected, row)
    }
    fn leases(&self, kind: LeaseKind) -> Result<Vec<(String, LeaseRow)>, TableError> {
        (**self).leases(kind)
    }
}

/// The real write, handed to a [`Hooked`] table's hook.
pub type Put<'a> = &'a dyn Fn() -> Result<bool, TableError>;

/// Decides around the real write.
pub type Hook = Box<dyn Fn(&str, Put<'_>) -> Result<bool, TableError> + Send + Sync>;

/// A table whose writes go through a hook that decides around the real one: tests and the
/// simulation make writes fail, lose their answer after landing, or let another shipper's
/// step run first. Reads go straight through.
pub struct Hooked {
    pub inner: std::sync::Arc<dyn Table>,
    pub hook: Hook,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Table for Hooked {
    fn get(&self, id: &str) -> Result<Option<Row>, TableError> {
        self.inner.get(id)
    }
    fn put(&self, id: &str, expected: Option<u64>, row: &Row) -> Result<bool, TableError> {
        (self.hook)(id, &|| self.inner.put(id, expected, row))
    }
    fn open_due(
        &self,
        now: u32,
        limit: usize,
        keep: &mut dyn FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, TableError> {
        self.inner.open_due(now, limit, keep)
    }
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Row)>, TableError> {
        self.inner.scan(prefix)
    }
    fn setting_or(&self, name: &str, value: u64) -> Result<u64, TableError> {
        self.inner.setting_or(name, value)
    }
    fn rows_under(
        &self,
        prefix_id: &str,
        from: &str,
        below: Option<&str>,
    ) -> Result<Vec<(String, Row)>, TableError> {
        self.inner.rows_under(prefix_id, from, below)
    }
    fn get_lease(&self, kind: LeaseKind, id: &str) -> Result<Option<LeaseRow>, TableError> {
        self.inner.get_lease(kind, id)
    }
    fn put_lease(
        &self,
        kind: LeaseKind,
        id: &str,
        expected: Option<u64>,
        row: &LeaseRow,
    ) -> Result<bool, TableError> {
        (self.hook)(id, &|| self.inner.put_lease(kind, id, expected, row))
    }
    fn leases(&self, kind: LeaseKind) -> Result<Vec<(String, LeaseRow)>, TableError> {
        self.inner.leases(kind)
    }
}
