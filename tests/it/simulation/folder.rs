//! The simulation's folder source: the real `FolderScan` over a real directory.
//!
//! Each object is written when it appears, as copy tools write: under a temporary name
//! (`NAME.json.gz.1a2b3c4d`), then renamed; sometimes a temporary file is left behind (a
//! copy under way, or abandoned), which must never ship. Between steps the schedule
//! disturbs the folder as operators do: `chmod` and hard links made elsewhere move a
//! file's inode change time (the time it "landed"), and finished files are deleted (the
//! ledger must then forget them, so it follows the folder's size). The file's bytes are
//! its element count, so its size is stable; the worker reads the object's elements from
//! the schedule's model, as for the other sources.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cloudtrail_s3::discover::folder::{FolderScan, is_object_name};
use cloudtrail_s3::discover::requeue;
use cloudtrail_s3::select::Selection;

use super::{Mutation, Obj, Run, Schedule};

/// What ids of folder entries start with (`ObjectRef::file`).
pub(super) const ID_PREFIX: &str = "dir:";

/// The folder, beside the ledger in the seed's scratch directory.
pub(super) struct SimFolder {
    root: PathBuf,
    /// Hard links are made here, outside the scanned tree.
    elsewhere: PathBuf,
    written: HashSet<String>,
    pub(super) deleted: HashSet<String>,
    links: u64,
}

impl SimFolder {
    pub(super) fn new(dir: &Path, seed: u64) -> Self {
        let root = dir.join(format!("folder-{seed}"));
        let elsewhere = dir.join(format!("links-{seed}"));
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&elsewhere);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        Self {
            root,
            elsewhere,
            written: HashSet::new(),
            deleted: HashSet::new(),
            links: 0,
        }
    }

    pub(super) fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.elsewhere);
    }
}

/// Whether the folder source picks `o` up at all: a complete object's name (`.txt` and
/// the like are never read).
pub(super) fn is_file_object(o: &Obj) -> bool {
    is_object_name(o.key.rsplit('/').next().unwrap_or(&o.key))
}

impl Schedule {
    /// Writes the objects that have appeared: under a temporary name, then renamed.
    pub(super) fn land_files(&mut self) {
        let now = self.now();
        let Some(f) = self.folder.as_mut() else {
            return;
        };
        let fresh: Vec<(String, u64)> = self
            .sim
            .world()
            .objects
            .values()
            .filter(|o| o.appears <= now && !f.written.contains(&o.key))
            .map(|o| (o.key.clone(), o.events))
            .collect();
        for (key, events) in fresh {
            let path = f.root.join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let temp = path.with_file_name(format!(
                "{}.{:08x}",
                path.file_name().unwrap().to_string_lossy(),
                self.rng.next() as u32
            ));
            std::fs::write(&temp, vec![b'x'; events as usize]).unwrap();
            if self.rng.chance(50) {
                // A second copy under way that is never finished: never shipped.
                std::fs::copy(&temp, temp.with_extension("partial")).unwrap();
            }
            std::fs::rename(&temp, &path).unwrap();
            f.written.insert(key);
        }
    }

    /// The engine's folder scan, and the ledger's own retries.
    pub(super) fn folder_scan(&mut self, run: &mut Run, rt: &tokio::runtime::Runtime) {
        self.land_files();
        let Some(f) = self.folder.as_ref() else {
            return;
        };
        let scan = FolderScan {
            root: f.root.clone(),
            clock: self.sim.clone(),
            select: Selection::events(self.expr.clone()),
            start: self.start,
            lookback: self.lookback,
            log: self.log.clone(),
        };
        let found = rt.block_on(scan.scan(&run.ledger));
        if self.mutation == Some(Mutation::FolderForgetsPresent) {
            // The planted bug: finished entries forgotten while their files are still
            // there (as forgetting by landing time did before a chmod).
            run.ledger
                .forget_done_absent(ID_PREFIX, &HashSet::new())
                .unwrap();
        }
        let now = self.now();
        let again = requeue(&run.ledger, now, Some(&f.root), &self.log);
        self.note(|| {
            format!(
                "folder scan: {} found, {} due again",
                found.len(),
                again.len()
            )
        });
        run.work.extend(found);
        run.work.extend(again);
    }

    /// What operators do to a folder: `chmod` a file, hard-link one from elsewhere (both
    /// move its inode change time), or delete a finished one.
    pub(super) fn disturb_folder(&mut self) {
        let Some(f) = self.folder.as_mut() else {
            return;
        };
        let mut keys: Vec<&String> = f.written.difference(&f.deleted).collect();
        keys.sort();
        if keys.is_empty() {
            return;
        }
        let key = keys[self.rng.below(keys.len() as u64) as usize].clone();
        let path = f.root.join(&key);
        let choice = self.rng.below(3) as usize;
        match choice {
            0 => {
                let mode = if self.rng.chance(500) { 0o640 } else { 0o644 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            1 => {
                f.links += 1;
                std::fs::hard_link(&path, f.elsewhere.join(format!("link-{}", f.links))).unwrap();
            }
            _ if self.out.finished.contains(&key) => {
                std::fs::remove_file(&path).unwrap();
                f.deleted.insert(key.clone());
            }
            _ => return,
        }
        let what = ["chmod", "hard link elsewhere", "deleted"][choice];
        self.note(|| format!("{key}: {what}"));
    }

    /// After the calm: the ledger follows the folder, so no entry is kept for a finished
    /// file that is gone.
    pub(super) fn check_folder(&self, run: &Run) -> Result<(), String> {
        let Some(f) = &self.folder else {
            return Ok(());
        };
        for key in &f.deleted {
            let id = format!("{ID_PREFIX}{key}");
            let entry = run.ledger.entry(&id).unwrap();
            if entry.is_some_and(|e| e.status == cloudtrail_s3::ledger::Status::Done) {
                return Err(format!(
                    "{key}: deleted from the folder, yet its done entry is still kept"
                ));
            }
        }
        Ok(())
    }
}
