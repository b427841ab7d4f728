//! Scanning a local folder laid out like the bucket (a copy kept by `aws s3 sync`, a
//! mounted archive).
//!
//! Only complete CloudTrail object names are read (`*.json.gz`, `*.json`): `aws s3 sync`
//! and most copy tools write `NAME.json.gz.1a2b3c4d` and rename it once complete. The time a
//! file landed is its inode change time, which copies cannot back-date (a preserved mtime
//! can be years old) and which a move into the folder sets to now: that orders the folder's
//! time window, and listings skip files that landed more than `lookback` behind it.
//!
//! Finished files are remembered while they are in the folder, not for the lookback: the
//! inode change time also moves with `chmod -R`, `chown -R` and hard links, and a file
//! forgotten by time would then look new and ship again (a whole archive, after a
//! permission fix). A done entry is forgotten once its file is gone, so the ledger follows
//! the folder's size. (The birth time, which those leave alone, is no better: a file moved
//! in from elsewhere on the same filesystem keeps its old one and would be skipped.)

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::aws::error::err_chain;
use crate::discover::listing::Clock;
use crate::discover::{DIGEST_DIR, DiscoverError, holds_watermark, window};
use crate::ledger::{Claimable, Honour, Ledger};
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::select::Selection;
use crate::timestamp::EventTime;

/// The time group of folder entries in the ledger.
const GROUP: &str = "dir";
/// What every folder entry's id starts with ([`ObjectRef::file`]).
const ID_PREFIX: &str = "dir:";

/// Scans one folder.
pub struct FolderScan<C> {
    pub root: PathBuf,
    pub clock: C,
    pub select: Selection,
    pub start: EventTime,
    pub lookback: u32,
    pub log: Logger,
}

/// A file found, with the Unix second it landed in the folder.
pub struct Found {
    pub object: ObjectRef,
    pub landed: u32,
}

/// Whether a file name is a complete CloudTrail object's (not a copy tool's temporary file).
pub fn is_object_name(name: &str) -> bool {
    name.ends_with(".json.gz") || name.ends_with(".json")
}

impl<C: Clock> FolderScan<C> {
    pub async fn scan(&self, ledger: &Ledger) -> Vec<ObjectRef> {
        let root = self.root.clone();
        let select = self.select.clone();
        let start = self.start;
        let walked =
            match tokio::task::spawn_blocking(move || walk_dir(&root, &select, start)).await {
                Ok(w) => w,
                Err(e) => {
                    self.log.error(format_args!("folder scan failed: {e}"));
                    return Vec::new();
                }
            };
        let (files, errors) = walked;
        let complete = errors.is_empty();
        for e in errors {
            self.log.error(format_args!("{e}"));
        }
        match self.claim(ledger, files, complete) {
            Ok(found) => found,
            Err(e) => {
                self.log.error(format_args!("{}: {e}", self.root.display()));
                Vec::new()
            }
        }
    }

    fn claim(
        &self,
        ledger: &Ledger,
        files: Vec<Found>,
        complete: bool,
    ) -> Result<Vec<ObjectRef>, crate::ledger::LedgerError> {
        // Done entries of files no longer in the folder are forgotten; only after a walk
        // that read every folder, since an unreadable one hides files that are still there.
        if complete {
            let present: std::collections::HashSet<&str> =
                files.iter().map(|f| &*f.object.id).collect();
            ledger.forget_done_absent(ID_PREFIX, &present)?;
        }
        let floor = window::floor(ledger, GROUP, self.lookback)?;
        let files: Vec<Found> = files
            .into_iter()
            .filter(|f| floor.is_none_or(|fl| f.landed >= fl))
            .collect();
        let claimable: Vec<Claimable<'_>> = files
            .iter()
            .map(|f| Claimable {
                id: &f.object.id,
                size: f.object.size,
                modified: (
                    f.object.last_modified.secs(),
                    f.object.last_modified.nanos(),
                ),
                forget_by: None,
            })
            .collect();
        let now = self.clock.now().secs();
        let claimed = ledger.claim(&claimable, now, Honour::Backoff)?;
        let ids: Vec<&str> = files.iter().map(|f| &*f.object.id).collect();
        let entries = ledger.entries(&ids)?;
        let items: Vec<(u32, bool)> = files
            .iter()
            .zip(entries)
            .map(|(f, e)| (f.landed, !holds_watermark(e.as_ref())))
            .collect();
        window::advance(
            ledger,
            GROUP,
            self.lookback,
            &items,
            now,
            window::Forget::Never,
        )?;
        let claimed: std::collections::HashSet<&str> = claimed.iter().map(|s| &**s).collect();
        Ok(files
            .into_iter()
            .filter(|f| claimed.contains(&*f.object.id))
            .map(|f| f.object)
            .collect())
    }
}

/// Files below `root` whose path relative to it matches and whose name is a complete
/// object's, modified at or after `start`.
pub fn walk_dir(
    root: &Path,
    select: &Selection,
    start: EventTime,
) -> (Vec<Found>, Vec<DiscoverError>) {
    // An unreadable entry is reported and skipped; the rest of the folder is still scanned.
    let err = |p: &Path, e: std::io::Error| DiscoverError {
        location: p.display().to_string(),
        reason: err_chain(&e),
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(err(&dir, e));
                continue;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    errors.push(err(&dir, e));
                    continue;
                }
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(err(&path, e));
                    continue;
                }
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(rel) = path
                .strip_prefix(root)
                .ok()
                .and_then(|r| r.to_str())
                .map(|r| r.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            if !is_object_name(name) || !select.matches(&rel) || rel.contains(DIGEST_DIR) {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(EventTime::from_system_time)
                .unwrap_or_else(EventTime::now);
            let landed = u32::try_from(meta.ctime()).unwrap_or(0);
            if mtime >= start {
                out.push(Found {
                    object: ObjectRef::file(path, rel, meta.len(), mtime),
                    landed,
                });
            }
        }
    }
    out.sort_by(|a, b| a.object.id.cmp(&b.object.id));
    (out, errors)
}

/// Whether a file is still as it was found (size and modification time): a file that
/// changed while it was read is tried again rather than failed for good.
pub fn unchanged(object: &ObjectRef) -> bool {
    let crate::object::Location::File { path, .. } = &object.location else {
        return true;
    };
    std::fs::metadata(path).is_ok_and(|m| {
        m.len() == object.size
            && m.modified().ok().and_then(EventTime::from_system_time) == Some(object.last_modified)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pathexpr::PathExpression;

    #[test]
    fn folder_walk_reports_a_bad_entry_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("AWSLogs/1/CloudTrail/r/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("a.json.gz"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", day.join("broken.json.gz")).unwrap();
        std::fs::write(day.join("z.json.gz"), b"x").unwrap();
        std::fs::write(day.join("t.json.gz.1a2b3c4d"), b"x").unwrap();
        let select = Selection::events(PathExpression::new("*AWSLogs/*/CloudTrail/*").unwrap());
        let (files, errors) = walk_dir(dir.path(), &select, EventTime::from_parts(0, 0).unwrap());
        let ids: Vec<&str> = files.iter().map(|f| &*f.object.id).collect();
        assert_eq!(
            ids,
            [
                "dir:AWSLogs/1/CloudTrail/r/2023/07/10/a.json.gz",
                "dir:AWSLogs/1/CloudTrail/r/2023/07/10/z.json.gz"
            ]
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("broken.json.gz"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn object_names() {
        assert!(is_object_name("x.json.gz") && is_object_name("x.json"));
        assert!(!is_object_name("x.json.gz.1a2b3c4d") && !is_object_name("x.json.gz.tmp"));
    }

    /// Scans `root` once with a fresh runtime; returns the ids claimed.
    fn scan_ids(
        scan: &FolderScan<crate::discover::listing::SystemClock>,
        ledger: &Ledger,
    ) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let found = rt.block_on(scan.scan(ledger));
        found.into_iter().map(|o| o.id.to_string()).collect()
    }

    fn folder_scan(root: &Path) -> FolderScan<crate::discover::listing::SystemClock> {
        FolderScan {
            root: root.to_path_buf(),
            clock: crate::discover::listing::SystemClock,
            select: Selection::events(PathExpression::new("*AWSLogs/*/CloudTrail/*").unwrap()),
            start: EventTime::from_parts(0, 0).unwrap(),
            lookback: 3600,
            log: Logger::new(std::sync::Arc::new(
                crate::log::tests_support::Lines::default(),
            )),
        }
    }

    /// Moves the folder's time window so its floor is one second after `landed`, as when
    /// files landed an hour later, and waits until the clock has passed that floor.
    fn age_past(ledger: &Ledger, landed: u32) {
        ledger.advance_time(GROUP, landed + 3600 + 1).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while EventTime::now().secs() <= landed + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock did not move"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn done(ledger: &Ledger, ids: &[String]) {
        use crate::ledger::mark::{End, Mark};
        let marks: Vec<Mark> = ids
            .iter()
            .map(|id| Mark {
                id: id.as_str().into(),
                end: Some(End::Done),
                ..Mark::default()
            })
            .collect();
        ledger
            .commit(
                &marks,
                EventTime::now().secs(),
                crate::ledger::Backoff::TRANSIENT,
            )
            .unwrap();
    }

    #[test]
    fn a_permission_change_never_ships_a_finished_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("AWSLogs/1/CloudTrail/r/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        for name in ["a.json.gz", "b.json.gz"] {
            std::fs::write(day.join(name), b"x").unwrap();
        }
        let ledger = Ledger::open(None, None, 0).unwrap();
        let scan = folder_scan(dir.path());
        let first = scan_ids(&scan, &ledger);
        assert_eq!(first.len(), 2);
        done(&ledger, &first);
        let landed = walk_dir(dir.path(), &scan.select, scan.start).0[0].landed;
        age_past(&ledger, landed);
        assert!(scan_ids(&scan, &ledger).is_empty());
        // chmod -R: every inode change time moves past the window's floor.
        use std::os::unix::fs::PermissionsExt;
        for name in ["a.json.gz", "b.json.gz"] {
            std::fs::set_permissions(day.join(name), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        for pass in 1..=2 {
            assert!(
                scan_ids(&scan, &ledger).is_empty(),
                "scan {pass} after chmod: finished files are remembered while they are in the folder"
            );
        }
        // A file that is gone is forgotten; the other is kept.
        std::fs::remove_file(day.join("a.json.gz")).unwrap();
        assert!(scan_ids(&scan, &ledger).is_empty());
        assert!(ledger.entry(&first[0]).unwrap().is_none(), "{}", first[0]);
        assert!(ledger.is_finished(&first[1]));
    }

    #[test]
    fn a_file_moved_in_from_elsewhere_ships_however_old() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("AWSLogs/1/CloudTrail/r/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("a.json.gz"), b"x").unwrap();
        // Staged beside the folder, on the same filesystem, before the window moved.
        let staged = dir.path().join("staged.json.gz");
        std::fs::write(&staged, b"x").unwrap();
        let ledger = Ledger::open(None, None, 0).unwrap();
        let scan = folder_scan(dir.path());
        let first = scan_ids(&scan, &ledger);
        assert_eq!(first, ["dir:AWSLogs/1/CloudTrail/r/2023/07/10/a.json.gz"]);
        done(&ledger, &first);
        let landed = walk_dir(dir.path(), &scan.select, scan.start).0[0].landed;
        age_past(&ledger, landed);
        std::fs::rename(&staged, day.join("late.json.gz")).unwrap();
        assert_eq!(
            scan_ids(&scan, &ledger),
            ["dir:AWSLogs/1/CloudTrail/r/2023/07/10/late.json.gz"],
            "a move lands the file now"
        );
    }
}
