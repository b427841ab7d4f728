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
}

/// A [`Table`] in memory. Each call is atomic, as a DynamoDB request is; tests order the
/// calls of several shippers to reproduce races.
#[derive(Debug, Default)]
pub struct MemTable {
    rows: Mutex<BTreeMap<String, Row>>,
    settings: Mutex<BTreeMap<String, u64>>,
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
}
