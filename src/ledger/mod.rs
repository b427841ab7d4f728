//! What has been shipped, kept across restarts.
//!
//! The state says which objects are finished (shipped, or given up on with a reason), how
//! far into an object shipping got, and where each listing resumes. It only ever moves when
//! a front end reports that records were handed over (Fluent Bit's cleanup callback, a
//! flushed stdout line), so a restart repeats at most the batch that was in flight.
//!
//! The file is JSON, replaced atomically (write a temporary file, `fsync`, rename, `fsync`
//! the directory): a crash during a save leaves the previous state whole.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FORMAT_VERSION: u32 = 1;

/// The persisted state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    version: u32,
    /// Unix seconds of the first start: anchors a relative `start_time` for good.
    pub first_start: Option<u32>,
    /// Objects whose every event was handed over.
    pub done: BTreeSet<String>,
    /// Objects given up on, with the reason (also logged when it happened).
    pub failed: BTreeMap<String, String>,
    /// Objects partly handed over: how many elements of `Records` were consumed.
    pub progress: BTreeMap<String, u64>,
    /// For each listed `…/CloudTrail/REGION/` prefix, the newest `YYYY/MM/DD` seen: listings
    /// start one day before it (or at the oldest unfinished object, if older).
    pub newest_days: BTreeMap<String, String>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
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
}

/// The state plus where it lives. `path: None` keeps it in memory only.
#[derive(Debug)]
pub struct Store {
    path: Option<PathBuf>,
    state: State,
    dirty: bool,
    /// Objects claimed by a scan and not finished yet (not persisted: after a restart they
    /// are found again, and `progress` says where to resume).
    inflight: HashSet<String>,
    /// An exclusive lock on `<db>.lock`, held while the store is open: two instances
    /// writing one state file would undo each other's progress.
    _lock: Option<fs::File>,
}

impl Store {
    /// Opens the state at `path`, or starts empty when the file does not exist yet.
    pub fn open(path: Option<&Path>) -> Result<Self, CheckpointError> {
        let lock = path.map(lock).transpose()?;
        let state = match path {
            None => State::default(),
            Some(p) => match fs::read(p) {
                Ok(bytes) => {
                    let state: State =
                        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                            path: p.into(),
                            reason: e.to_string(),
                        })?;
                    if state.version != FORMAT_VERSION {
                        return Err(CheckpointError::Corrupt {
                            path: p.into(),
                            reason: format!("format version {}", state.version),
                        });
                    }
                    state
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
                Err(source) => {
                    return Err(CheckpointError::Io {
                        path: p.into(),
                        source,
                    });
                }
            },
        };
        let mut store = Self {
            path: path.map(Into::into),
            state,
            dirty: false,
            inflight: HashSet::new(),
            _lock: lock,
        };
        store.state.version = FORMAT_VERSION;
        // Write once at start-up: proves the location is writable before any data moves.
        store.dirty = true;
        store.save()?;
        Ok(store)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the object is finished (shipped or given up on).
    pub fn is_finished(&self, id: &str) -> bool {
        self.state.done.contains(id) || self.state.failed.contains_key(id)
    }

    /// Whether every event of the object was handed over.
    pub fn is_done(&self, id: &str) -> bool {
        self.state.done.contains(id)
    }

    /// Why the object was given up on, if it was.
    pub fn failed_reason(&self, id: &str) -> Option<&str> {
        self.state.failed.get(id).map(String::as_str)
    }

    /// Takes an object out of the failed set so it can be tried again.
    pub fn unfail(&mut self, id: &str) {
        if self.state.failed.remove(id).is_some() {
            self.dirty = true;
        }
    }

    /// Claims an object for shipping: false when it is finished or already claimed.
    pub fn claim(&mut self, id: &str) -> bool {
        !self.is_finished(id) && self.inflight.insert(id.to_string())
    }

    /// Gives a claim back without finishing the object (a transient failure): the next
    /// scan finds it again.
    pub fn release(&mut self, id: &str) {
        self.inflight.remove(id);
    }

    /// Objects claimed and not finished.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// How many elements of the object were already handed over.
    pub fn progress(&self, id: &str) -> u64 {
        self.state.progress.get(id).copied().unwrap_or(0)
    }

    /// Sets the first-start time if it is not set yet and returns the value in force.
    pub fn first_start_or(&mut self, now: u32) -> u32 {
        *self.state.first_start.get_or_insert_with(|| {
            self.dirty = true;
            now
        })
    }

    /// Records that elements up to `position` of `id` were handed over.
    pub fn record_progress(&mut self, id: &str, position: u64) {
        if self.is_finished(id) {
            return;
        }
        let p = self.state.progress.entry(id.to_string()).or_insert(0);
        if position > *p {
            *p = position;
            self.dirty = true;
        }
    }

    /// Marks the object as fully handed over.
    pub fn record_done(&mut self, id: &str) {
        self.inflight.remove(id);
        self.state.progress.remove(id);
        self.state.done.insert(id.to_string());
        self.dirty = true;
    }

    /// Marks the object as given up on.
    pub fn record_failed(&mut self, id: &str, reason: &str) {
        self.inflight.remove(id);
        self.state.progress.remove(id);
        self.state.failed.insert(id.to_string(), reason.to_string());
        self.dirty = true;
    }

    /// The newest day (`YYYY/MM/DD`) seen under a listed prefix.
    pub fn newest_day(&self, prefix: &str) -> Option<&str> {
        self.state.newest_days.get(prefix).map(String::as_str)
    }

    /// Records a newer day seen under a prefix (never moves back).
    pub fn set_newest_day(&mut self, prefix: &str, day: &str) {
        if self.newest_day(prefix).is_some_and(|d| d >= day) {
            return;
        }
        self.state
            .newest_days
            .insert(prefix.to_string(), day.to_string());
        self.dirty = true;
    }

    /// Objects under `id_prefix` that are claimed or partly shipped: listings must not start
    /// after any of them.
    pub fn open_under<'a>(&'a self, id_prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let claimed = self.inflight.iter().map(String::as_str);
        let partial = self.state.progress.keys().map(String::as_str);
        claimed
            .chain(partial)
            .filter(move |id| id.starts_with(id_prefix))
    }

    /// Forgets finished objects with ids in `[lo, hi)`: no listing returns them again.
    pub fn forget_finished(&mut self, lo: &str, hi: &str) {
        if lo >= hi {
            return;
        }
        let range = (std::ops::Bound::Included(lo), std::ops::Bound::Excluded(hi));
        let stale: Vec<String> = self.state.done.range::<str, _>(range).cloned().collect();
        let stale_failed: Vec<String> = self
            .state
            .failed
            .range::<str, _>(range)
            .map(|(k, _)| k.clone())
            .collect();
        if stale.is_empty() && stale_failed.is_empty() {
            return;
        }
        for id in stale {
            self.state.done.remove(&id);
        }
        for id in stale_failed {
            self.state.failed.remove(&id);
        }
        self.dirty = true;
    }

    /// Writes the state if it changed since the last save.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            write_atomic(path, &self.state).map_err(|source| CheckpointError::Io {
                path: path.clone(),
                source,
            })?;
        }
        self.dirty = false;
        Ok(())
    }
}

fn lock(path: &Path) -> Result<fs::File, CheckpointError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let io = |source| CheckpointError::Io {
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
        .open(PathBuf::from(name))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(CheckpointError::InUse { path: path.into() }),
        Err(fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn write_atomic(path: &Path, state: &State) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, state)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let mut s = Store::open(Some(&path)).unwrap();
        s.record_progress("s3://b/k1", 10);
        s.record_done("s3://b/k2");
        s.record_failed("s3://b/k3", "gzip: bad");
        s.set_newest_day("AWSLogs/1/CloudTrail/r/", "2023/07/10");
        s.save().unwrap();
        let saved = s.state().clone();
        drop(s);
        let again = Store::open(Some(&path)).unwrap();
        assert_eq!(again.state(), &saved);
        assert_eq!(again.progress("s3://b/k1"), 10);
        assert!(again.is_finished("s3://b/k2") && again.is_finished("s3://b/k3"));
    }

    #[test]
    fn forgets_finished_objects_in_a_range_and_newest_day_never_moves_back() {
        let mut s = Store::open(None).unwrap();
        s.record_done("s3://b/AWSLogs/1/CloudTrail/r/2023/07/08/a");
        s.record_done("s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/b");
        s.record_failed("s3://b/AWSLogs/1/CloudTrail/r/2023/07/08/c", "x");
        s.record_done("s3://b/AWSLogs/2/CloudTrail/r/2023/07/08/c");
        s.forget_finished(
            "s3://b/AWSLogs/1/CloudTrail/r/",
            "s3://b/AWSLogs/1/CloudTrail/r/2023/07/09",
        );
        assert!(!s.is_finished("s3://b/AWSLogs/1/CloudTrail/r/2023/07/08/a"));
        assert!(!s.is_finished("s3://b/AWSLogs/1/CloudTrail/r/2023/07/08/c"));
        assert!(s.is_finished("s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/b"));
        assert!(s.is_finished("s3://b/AWSLogs/2/CloudTrail/r/2023/07/08/c"));
        s.set_newest_day("p/", "2023/07/10");
        s.set_newest_day("p/", "2023/07/01");
        assert_eq!(s.newest_day("p/"), Some("2023/07/10"));
    }

    #[test]
    fn open_objects_are_claimed_or_partly_shipped() {
        let mut s = Store::open(None).unwrap();
        assert!(s.claim("s3://b/p/1"));
        assert!(!s.claim("s3://b/p/1"), "claimed once");
        s.record_progress("s3://b/p/2", 5);
        s.record_done("s3://b/p/3");
        assert!(!s.claim("s3://b/p/3"), "finished objects are not claimed");
        let mut open: Vec<&str> = s.open_under("s3://b/p/").collect();
        open.sort();
        assert_eq!(open, ["s3://b/p/1", "s3://b/p/2"]);
    }

    #[test]
    fn one_state_file_one_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let first = Store::open(Some(&path)).unwrap();
        let err = Store::open(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("in use by another running instance"), "{err}");
        drop(first);
        Store::open(Some(&path)).expect("free again once the first is closed");
    }

    #[test]
    fn corrupt_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{\"done\": [").unwrap();
        let err = Store::open(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("not a state file"),
            "{err}"
        );
    }
}
