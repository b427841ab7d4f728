//! The ledger's file: opening it (creating, locking, converting an earlier release's JSON
//! state), its transactions (durable, or lazy where a crash only costs a repeat of work),
//! and compaction.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};

use super::{
    Entry, FLOORS, FORMAT_VERSION, Ledger, LedgerError, META, OBJECTS, OPEN, Status, TIMED, TIMES,
    WATERMARKS, legacy,
};

/// The ledger file's page cache. redb's default is 1 GiB, filled as pages are read and
/// written, so a shipper's memory grew with its ledger: an organization's two-day lookback
/// (millions of entries, hundreds of megabytes of file) would have stayed resident. Pages
/// beyond the cache are read through the kernel's page cache, which the system can take
/// back; `scripts/bench ledger` measures what the bound costs a commit.
pub const CACHE_BYTES: usize = 16 << 20;

impl Ledger {
    /// Opens the ledger at `path` (created when missing), or one in memory. A JSON state
    /// file of an earlier release is converted; `bucket` names the bucket its listing
    /// positions belong to.
    pub fn open(path: Option<&Path>, bucket: Option<&str>, now: u32) -> Result<Self, LedgerError> {
        Self::open_with_cache(path, bucket, now, CACHE_BYTES)
    }

    /// [`Ledger::open`] with a page cache of `cache_bytes` (the benchmark compares sizes).
    pub fn open_with_cache(
        path: Option<&Path>,
        bucket: Option<&str>,
        now: u32,
        cache_bytes: usize,
    ) -> Result<Self, LedgerError> {
        let Some(path) = path else {
            let db = Database::builder()
                .set_cache_size(cache_bytes)
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
            let db = Database::builder()
                .set_cache_size(cache_bytes)
                .create(&fresh)
                .map_err(|e| store_err(&fresh, e))?;
            let ledger = Self::init(db, None, None)?;
            ledger.import(&old, bucket, now)?;
            drop(ledger);
            fs::rename(path, with_suffix(path, ".v1.json")).map_err(io)?;
            fs::rename(&fresh, path).map_err(io)?;
            sync_dir(path).map_err(io)?;
        }
        let db = match Database::builder().set_cache_size(cache_bytes).create(path) {
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
        // once per start, while nothing else reads it (about 5 s per million entries with the
        // bounded page cache, `scripts/bench ledger`).
        ledger.compact()?;
        Ok(ledger)
    }

    /// A ledger whose entries live in a shared table (`ledger.dynamodb_table`).
    pub fn with_shared(shared: super::shared::SharedLedger) -> Result<Self, LedgerError> {
        let mut ledger = Self::open(None, None, 0)?;
        ledger.shared = Some(shared);
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
            shared: None,
            notified: Default::default(),
        };
        // Creates the tables and proves the location is writable before any data moves.
        ledger.write(|txn| {
            txn.open_table(OBJECTS)?;
            txn.open_table(OPEN)?;
            txn.open_table(WATERMARKS)?;
            txn.open_table(TIMES)?;
            txn.open_table(TIMED)?;
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

    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        self.write_with(Durability::Immediate, f)
    }

    /// A transaction whose loss in a crash costs nothing but a repeat of work: claims
    /// (listings and redeliveries find the objects again) and backoffs. It reaches the disk
    /// with the next durable commit.
    pub(super) fn write_lazy<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        self.write_with(Durability::None, f)
    }

    pub(super) fn write_with<T>(
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

    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        let path = self.path.as_deref().unwrap_or(Path::new(":memory:"));
        let txn = self.db.begin_read().map_err(|e| store_err(path, e))?;
        f(&txn).map_err(|e| e.into_error(path))
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
}

/// A failure inside a transaction.
pub(super) enum Fail {
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

pub(super) fn store_err(path: &Path, e: impl Into<redb::Error>) -> LedgerError {
    LedgerError::Store {
        path: path.into(),
        reason: e.into().to_string(),
    }
}

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// An exclusive lock on `<db>.lock`, held while the ledger is open: two instances on one
/// state would undo each other's work. (redb refuses a second opener too; this lock gives
/// the clearer message, and the folder is created here.)
pub(super) fn lock(path: &Path) -> Result<fs::File, LedgerError> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{claim, mark};
    use super::*;
    use crate::ledger::Backoff;
    use crate::ledger::mark::End;

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
