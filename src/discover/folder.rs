//! Scanning a local folder laid out like the bucket (a copy kept by `aws s3 sync`, a
//! mounted archive).
//!
//! Only complete CloudTrail object names are read (`*.json.gz`, `*.json`): `aws s3 sync`
//! and most copy tools write `NAME.json.gz.1a2b3c4d` and rename it once complete. The time a
//! file landed is its creation (birth) time, which copies cannot back-date (a preserved
//! mtime can be years old) and which `chmod -R`, `chown -R`, renames and hard links leave
//! alone: that orders the folder's time window. The inode change time, which all of those
//! move, would make a permission fix re-ship the whole archive older than the lookback. It
//! is used only where the filesystem records no birth time (some network filesystems).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::aws::error::err_chain;
use crate::discover::listing::Clock;
use crate::discover::{DIGEST_DIR, DiscoverError, holds_watermark, window};
use crate::ledger::{Claimable, Honour, Ledger};
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::pathexpr::PathExpression;
use crate::timestamp::EventTime;

/// The time group of folder entries in the ledger.
const GROUP: &str = "dir";

/// Scans one folder.
pub struct FolderScan<C> {
    pub root: PathBuf,
    pub clock: C,
    pub expr: PathExpression,
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
        let expr = self.expr.clone();
        let start = self.start;
        let walked = match tokio::task::spawn_blocking(move || walk_dir(&root, &expr, start)).await
        {
            Ok(w) => w,
            Err(e) => {
                self.log.error(format_args!("folder scan failed: {e}"));
                return Vec::new();
            }
        };
        let (files, errors) = walked;
        for e in errors {
            self.log.error(format_args!("{e}"));
        }
        match self.claim(ledger, files) {
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
    ) -> Result<Vec<ObjectRef>, crate::ledger::LedgerError> {
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
                forget_by: Some((GROUP, f.landed)),
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
        window::advance(ledger, GROUP, self.lookback, &items, now)?;
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
    expr: &PathExpression,
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
            if !is_object_name(name) || !expr.matches(&rel) || rel.contains(DIGEST_DIR) {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(EventTime::from_system_time)
                .unwrap_or_else(EventTime::now);
            let landed = landed(&meta);
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

/// When a file landed in the folder: its birth time, else its inode change time.
fn landed(meta: &std::fs::Metadata) -> u32 {
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let secs = born.unwrap_or_else(|| u64::try_from(meta.ctime()).unwrap_or(0));
    u32::try_from(secs).unwrap_or(u32::MAX)
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

    #[test]
    fn folder_walk_reports_a_bad_entry_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("AWSLogs/1/CloudTrail/r/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("a.json.gz"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", day.join("broken.json.gz")).unwrap();
        std::fs::write(day.join("z.json.gz"), b"x").unwrap();
        std::fs::write(day.join("t.json.gz.1a2b3c4d"), b"x").unwrap();
        let expr = PathExpression::new("*AWSLogs/*/CloudTrail/*").unwrap();
        let (files, errors) = walk_dir(dir.path(), &expr, EventTime::from_parts(0, 0).unwrap());
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

    #[test]
    fn chmod_chown_and_links_do_not_move_the_landing_time() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("AWSLogs/1/CloudTrail/r/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        let file = day.join("a.json.gz");
        std::fs::write(&file, b"x").unwrap();
        if std::fs::metadata(&file).unwrap().created().is_err() {
            eprintln!("this filesystem records no birth time: nothing to check here");
            return;
        }
        let expr = PathExpression::new("*AWSLogs/*/CloudTrail/*").unwrap();
        let walk = || walk_dir(dir.path(), &expr, EventTime::from_parts(0, 0).unwrap()).0;
        let before = walk()[0].landed;
        // The clock moves past the landing second, so a moved time would show.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while EventTime::now().secs() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock did not move"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(&file, dir.path().join("elsewhere")).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert!(
            u32::try_from(meta.ctime()).unwrap() > before,
            "the inode change time moved, as chmod does"
        );
        assert_eq!(walk()[0].landed, before, "the landing time did not");
    }
}
