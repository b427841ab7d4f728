//! Finding objects to ship: S3 listings and local folders.
//!
//! For the CloudTrail layout (`…AWSLogs/[o-org/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/…`) the
//! scan walks accounts and regions with delimiter listings and keeps, per region, a cursor
//! that listings start after. The cursor trails the newest day seen by one day and never
//! passes an object that is not finished yet, so late deliveries are still found while a
//! bucket with years of history is not listed again on every scan. Other expressions are
//! listed from their literal prefix on each scan.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;

use crate::aws::error::{Operation, describe, err_chain};
use crate::ledger::Store;
use crate::log::Logger;
use crate::object::{ObjectRef, s3_id};
use crate::pathexpr::PathExpression;
use crate::timestamp::{EventTime, civil_from_days};

pub mod notify;
pub mod sqs;

/// A listing that failed; the scan goes on with the other prefixes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("listing {location}: {reason}")]
pub struct DiscoverError {
    pub location: String,
    pub reason: String,
}

/// Where to look.
pub enum Origin {
    S3 { client: Client, bucket: Arc<str> },
    Dir { root: PathBuf },
}

/// Scans an origin for objects that match the expression, are new enough and are not
/// finished or already in flight (those it claims in `store`).
pub struct Discovery {
    pub origin: Origin,
    pub expr: PathExpression,
    pub start: EventTime,
    pub log: Logger,
    /// Counts keys returned by listings (shared with the engine's stats).
    pub keys_listed: Arc<AtomicU64>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::S3 { bucket, .. } => write!(f, "s3://{bucket}"),
            Origin::Dir { root } => write!(f, "{}", root.display()),
        }
    }
}

/// Digest files are never fetched, whatever the expression says.
pub const DIGEST_DIR: &str = "/CloudTrail-Digest/";

impl Discovery {
    /// One scan; listing errors are logged with their prefix and do not end the scan.
    pub async fn scan(&self, store: &Mutex<Store>) -> Vec<ObjectRef> {
        let mut found = Vec::new();
        match &self.origin {
            Origin::Dir { root } => {
                let root = root.clone();
                let expr = self.expr.clone();
                let start = self.start;
                let walked =
                    tokio::task::spawn_blocking(move || walk_dir(&root, &expr, start)).await;
                match walked {
                    Ok((files, errors)) => {
                        for e in errors {
                            self.log.error(format_args!("{e}"));
                        }
                        let mut s = lock(store);
                        found.extend(files.into_iter().filter(|o| s.claim(&o.id)));
                    }
                    Err(e) => self.log.error(format_args!("folder scan failed: {e}")),
                }
            }
            Origin::S3 { client, bucket } => {
                let lister = Lister {
                    client,
                    bucket,
                    expr: &self.expr,
                    start: self.start,
                    keys_listed: &self.keys_listed,
                };
                let result = match layout_base(&self.expr) {
                    Some(base) => lister.scan_layout(base, store, &mut found, &self.log).await,
                    None => lister.scan_flat(store, &mut found).await,
                };
                if let Err(e) = result {
                    self.log.error(format_args!("{e}"));
                }
            }
        }
        found
    }
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `…AWSLogs/` part of an expression that follows the CloudTrail layout, when the
/// layout walk applies (literal up to `AWSLogs/`, and a `CloudTrail/` level after it).
fn layout_base(expr: &PathExpression) -> Option<&str> {
    let text = expr.as_str();
    let at = text.find("AWSLogs/")? + "AWSLogs/".len();
    let base = &text[..at];
    (!base.contains('*') && text[at..].contains("CloudTrail/")).then_some(base)
}

/// `YYYY/MM/DD` of a day number.
fn day_path(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}/{m:02}/{d:02}")
}

/// The day number of a key's `YYYY/MM/DD/` part, right after the region prefix.
fn key_day(rest: &str) -> Option<i64> {
    let b = rest.as_bytes();
    if b.len() < 11 || b[4] != b'/' || b[7] != b'/' || b[10] != b'/' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| rest.get(r)?.parse::<u32>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(crate::timestamp::days_from_civil(i64::from(y), m, d))
}

struct Lister<'a> {
    client: &'a Client,
    bucket: &'a Arc<str>,
    expr: &'a PathExpression,
    start: EventTime,
    keys_listed: &'a AtomicU64,
}

/// One listed object.
struct Listed {
    key: String,
    size: u64,
    last_modified: EventTime,
}

impl Lister<'_> {
    fn error(&self, prefix: &str, reason: String) -> DiscoverError {
        DiscoverError {
            location: format!("s3://{}/{prefix}", self.bucket),
            reason,
        }
    }

    /// What a failed listing says, with the permission or setting to fix when it is one.
    fn describe<E>(
        &self,
        e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> String
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        describe(
            Operation::ListObjects {
                bucket: self.bucket,
            },
            e,
        )
        .1
    }

    /// Sub-"directories" of `prefix`.
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DiscoverError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(self.bucket.as_ref())
                .prefix(prefix)
                .delimiter("/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.error(prefix, self.describe(&e)))?;
            out.extend(
                resp.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(String::from)),
            );
            token = resp.next_continuation_token().map(String::from);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every object under `prefix` whose key sorts after `start_after`.
    async fn list_objects(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<Listed>, DiscoverError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(self.bucket.as_ref())
                .prefix(prefix)
                .set_start_after(start_after.map(String::from))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.error(prefix, self.describe(&e)))?;
            self.keys_listed
                .fetch_add(resp.contents().len() as u64, Ordering::Relaxed);
            for o in resp.contents() {
                let Some(key) = o.key() else { continue };
                let last_modified = o
                    .last_modified()
                    .and_then(|t| EventTime::new(t.secs(), t.subsec_nanos()))
                    .unwrap_or_else(EventTime::now);
                out.push(Listed {
                    key: key.to_string(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    last_modified,
                });
            }
            token = resp.next_continuation_token().map(String::from);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    fn wanted(&self, o: &Listed) -> bool {
        self.expr.matches(&o.key) && !o.key.contains(DIGEST_DIR) && o.last_modified >= self.start
    }

    async fn scan_flat(
        &self,
        store: &Mutex<Store>,
        found: &mut Vec<ObjectRef>,
    ) -> Result<(), DiscoverError> {
        let listed = self.list_objects(self.expr.literal_prefix(), None).await?;
        let mut s = lock(store);
        for o in listed.into_iter().filter(|o| self.wanted(o)) {
            let id = s3_id(self.bucket, &o.key);
            if s.claim(&id) {
                found.push(ObjectRef::s3(self.bucket, o.key, o.size, o.last_modified));
            }
        }
        Ok(())
    }

    async fn scan_layout(
        &self,
        base: &str,
        store: &Mutex<Store>,
        found: &mut Vec<ObjectRef>,
        log: &Logger,
    ) -> Result<(), DiscoverError> {
        let mut accounts = Vec::new();
        for dir in self.list_dirs(base).await? {
            let name = dir[base.len()..].trim_end_matches('/');
            if !self.expr.may_match_below(&dir) {
                continue;
            }
            if name.bytes().all(|c| c.is_ascii_digit()) {
                accounts.push(dir);
            } else {
                // An organization trail's level (`o-…`): its children are the accounts.
                match self.list_dirs(&dir).await {
                    Ok(children) => accounts.extend(children.into_iter().filter(|c| {
                        c[dir.len()..]
                            .trim_end_matches('/')
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                            && self.expr.may_match_below(c)
                    })),
                    Err(e) => log.error(format_args!("{e}")),
                }
            }
        }
        for account in accounts {
            let trail = format!("{account}CloudTrail/");
            if !self.expr.may_match_below(&trail) {
                continue;
            }
            let regions = match self.list_dirs(&trail).await {
                Ok(r) => r,
                Err(e) => {
                    log.error(format_args!("{e}"));
                    continue;
                }
            };
            for region in regions.into_iter().filter(|r| self.expr.may_match_below(r)) {
                if let Err(e) = self.scan_region(&region, store, found).await {
                    log.error(format_args!("{e}"));
                }
            }
        }
        Ok(())
    }

    /// Lists one `…/CloudTrail/REGION/` prefix, starting one day before the newest day
    /// seen there, or at the oldest unfinished object if that is older, and never before
    /// `start_time`'s day.
    async fn scan_region(
        &self,
        region: &str,
        store: &Mutex<Store>,
        found: &mut Vec<ObjectRef>,
    ) -> Result<(), DiscoverError> {
        let start_day = i64::from(self.start.secs()) / 86_400;
        let id_prefix = s3_id(self.bucket, region);
        let start_after = {
            let mut s = lock(store);
            let oldest_open = s
                .open_under(&id_prefix)
                .filter_map(|id| key_day(&id[id_prefix.len()..]))
                .min();
            let newest = s.newest_day(region).and_then(|d| key_day(&format!("{d}/")));
            let mut floor = newest.map_or(start_day - 1, |n| n - 1);
            if let Some(open) = oldest_open {
                floor = floor.min(open);
            }
            let start_after = format!("{region}{}", day_path(floor.max(start_day - 1)));
            s.forget_finished(&id_prefix, &s3_id(self.bucket, &start_after));
            start_after
        };
        let listed = self.list_objects(region, Some(&start_after)).await?;

        let mut s = lock(store);
        let mut newest_day = None;
        for o in listed {
            let day = key_day(&o.key[region.len()..]);
            newest_day = newest_day.max(day);
            // The key's date is CloudTrail's delivery date: one before start_time's day is
            // older than start_time, whatever its LastModified says (copied objects).
            if !self.wanted(&o) || day.is_some_and(|d| d < start_day) {
                continue;
            }
            if s.claim(&s3_id(self.bucket, &o.key)) {
                found.push(ObjectRef::s3(self.bucket, o.key, o.size, o.last_modified));
            }
        }
        if let Some(newest) = newest_day {
            s.set_newest_day(region, &day_path(newest));
        }
        Ok(())
    }
}

/// Files below `root` whose path relative to it matches, modified at or after `start`.
fn walk_dir(
    root: &Path,
    expr: &PathExpression,
    start: EventTime,
) -> (Vec<ObjectRef>, Vec<DiscoverError>) {
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
            if !expr.matches(&rel) || rel.contains(DIGEST_DIR) {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(EventTime::from_system_time)
                .unwrap_or_else(EventTime::now);
            if mtime >= start {
                out.push(ObjectRef::file(path, rel, meta.len(), mtime));
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_base_only_for_cloudtrail_layout() {
        let e = |s| PathExpression::new(s).unwrap();
        assert_eq!(layout_base(&e("AWSLogs/*/CloudTrail/*")), Some("AWSLogs/"));
        assert_eq!(
            layout_base(&e("trails/AWSLogs/1/CloudTrail/*")),
            Some("trails/AWSLogs/")
        );
        assert_eq!(layout_base(&e("*/AWSLogs/*/CloudTrail/*")), None);
        assert_eq!(layout_base(&e("AWSLogs/*/CloudTrail-Insight/*")), None);
        assert_eq!(layout_base(&e("logs/*")), None);
    }

    #[test]
    fn folder_walk_reports_a_bad_entry_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("AWSLogs/1/CloudTrail/r/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("a.json.gz"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", day.join("broken.json.gz")).unwrap();
        std::fs::write(day.join("z.json.gz"), b"x").unwrap();
        let expr = PathExpression::new("AWSLogs/*/CloudTrail/*").unwrap();
        let (files, errors) = walk_dir(dir.path(), &expr, EventTime::from_parts(0, 0).unwrap());
        let ids: Vec<&str> = files.iter().map(|f| &*f.id).collect();
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
    fn key_days() {
        assert_eq!(key_day("2023/07/10/x.json.gz"), Some(19_548));
        assert_eq!(day_path(19_547), "2023/07/09");
        assert_eq!(key_day("2023/7/10/x"), None);
        assert_eq!(key_day("x"), None);
    }
}
