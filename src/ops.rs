//! The operator's commands over a stopped shipper's ledger: `status` (how far each listed
//! prefix has got, how far behind it is, what failed and what waits to be tried again) and
//! `retry` (put failed objects back in line).
//!
//! Both open the ledger itself, so they need the shipper stopped: the ledger takes one
//! process at a time, since two writers would undo each other's work. [`open`] says so
//! plainly rather than waiting or reading a file that changes under it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::layout::{day_path, file_time, key_day, region_prefix};
use crate::ledger::{Entry, Ledger, LedgerError, Status};
use crate::timestamp::civil_from_days;

/// Why an operator command could not open the ledger.
#[derive(Debug)]
pub enum OpenError {
    /// No file at the path (never created by these commands).
    Missing(PathBuf),
    /// A JSON state file of an earlier release: the shipper converts it at its next start.
    Legacy(PathBuf),
    /// A running shipper holds it.
    InUse(PathBuf),
    Ledger(LedgerError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Missing(p) => write!(
                f,
                "there is no ledger at {} (check the path: it is the 'db' setting)",
                p.display()
            ),
            OpenError::Legacy(p) => write!(
                f,
                "{} is a JSON state file of an earlier release; start the shipper once to \
                 convert it, stop it, then run this again",
                p.display()
            ),
            OpenError::InUse(p) => write!(
                f,
                "the ledger {} is held by a running shipper.\n\
                 Only one process may open it at a time, because two writers would undo each \
                 other's work.\n\
                 Stop the shipper (the cloudtrail-s3 command, or the Fluent Bit using the \
                 plugin) first, then run this again.",
                p.display()
            ),
            OpenError::Ledger(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

/// Opens an existing ledger for an operator command: never creates one, and refuses a
/// ledger held by a running shipper with [`OpenError::InUse`].
pub fn open(path: &Path, now: u32) -> Result<Ledger, OpenError> {
    match path.try_exists() {
        Ok(true) => {}
        Ok(false) => return Err(OpenError::Missing(path.into())),
        Err(source) => {
            return Err(OpenError::Ledger(LedgerError::Io {
                path: path.into(),
                source,
            }));
        }
    }
    // Opening converts an earlier release's JSON file, and without the bucket that file's
    // listing positions belong to; leave that to the shipper, which knows the bucket.
    if path.is_file() {
        let mut head = Vec::with_capacity(256);
        let read = std::fs::File::open(path).and_then(|f| f.take(256).read_to_end(&mut head));
        if let Err(source) = read {
            return Err(OpenError::Ledger(LedgerError::Io {
                path: path.into(),
                source,
            }));
        }
        if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return Err(OpenError::Legacy(path.into()));
        }
    }
    Ledger::open(Some(path), None, now).map_err(|e| match e {
        LedgerError::InUse { path } => OpenError::InUse(path),
        e => OpenError::Ledger(e),
    })
}

/// Entries by status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub open: u64,
    pub done: u64,
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, status: Status) {
        match status {
            Status::Open => self.open += 1,
            Status::Done => self.done += 1,
            Status::Failed => self.failed += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.open + self.done + self.failed
    }
}

/// One listed `…/CloudTrail/REGION/` prefix.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixStatus {
    /// `s3://BUCKET/[PREFIX/]AWSLogs/[o-ORG/]ACCOUNT/CloudTrail/REGION/`.
    pub prefix: String,
    pub bucket: Option<String>,
    pub organization: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    /// The low watermark: every wanted key up to it is finished. `None` before the first
    /// listing finishes a key (and for objects found through SQS alone).
    pub watermark: Option<String>,
    /// The watermark key's day, `YYYY-MM-DD`.
    pub day: Option<String>,
    /// What the lag is measured from: the delivery time in the watermark key's file name,
    /// else the end of its day (Unix seconds, and as text).
    pub watermark_time: Option<u32>,
    pub watermark_time_text: Option<String>,
    /// `file name` or `end of day`.
    pub lag_from: Option<&'static str>,
    /// Now minus `watermark_time`, in seconds.
    pub lag_secs: Option<i64>,
    pub counts: Counts,
}

/// A time watermark: a flat listing or a folder.
#[derive(Debug, Clone, Serialize)]
pub struct WindowStatus {
    /// The ledger's group name (`flat:s3://BUCKET/PREFIX`, `dir`).
    pub group: String,
    /// `flat` (a listing without the CloudTrail layout) or `folder`.
    pub kind: &'static str,
    /// The ids its entries start with.
    pub location: String,
    /// Every wanted object that landed at or before it is finished (Unix seconds).
    pub watermark_time: Option<u32>,
    pub watermark_time_text: Option<String>,
    pub lag_secs: Option<i64>,
    pub counts: Counts,
}

/// An object given up on.
#[derive(Debug, Clone, Serialize)]
pub struct FailedObject {
    pub id: String,
    pub reason: String,
    /// Elements of `Records` already committed: a retry resumes after them.
    pub position: u64,
    pub size: u64,
    pub failed_at: u32,
    pub failed_at_text: String,
}

/// An object waiting to be shipped (again): transient failures backing off, objects put
/// back in line, and what was in flight when the shipper stopped.
#[derive(Debug, Clone, Serialize)]
pub struct OpenObject {
    pub id: String,
    pub position: u64,
    /// Failed tries in a row.
    pub attempts: u32,
    /// Not tried before this time (Unix seconds); at or before `now`: at the shipper's next
    /// scan.
    pub next_try: u32,
    pub next_try_text: String,
    pub due: bool,
    /// The last transient error, if any.
    pub last_error: Option<String>,
    pub size: u64,
}

/// What `cloudtrail-s3 status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub ledger: String,
    pub now: u32,
    pub now_text: String,
    pub counts: Counts,
    pub prefixes: Vec<PrefixStatus>,
    pub windows: Vec<WindowStatus>,
    /// Entries under no listed prefix or window (objects found through SQS, say).
    pub other: Counts,
    pub failed: Vec<FailedObject>,
    pub open: Vec<OpenObject>,
}

/// The group rows entries are counted into.
enum Slot {
    Prefix(String),
    Window(usize),
    Other,
}

/// Reads the status of a ledger at `now` (one pass over its entries).
pub fn status(ledger: &Ledger, path: &Path, now: u32) -> Result<StatusReport, LedgerError> {
    let mut prefixes: BTreeMap<String, PrefixStatus> = BTreeMap::new();
    let mut windows: Vec<WindowStatus> = Vec::new();
    for (key, value) in ledger.watermarks()? {
        if let Some(group) = key.strip_prefix("time:") {
            let secs = value.parse::<u32>().ok();
            let (kind, location) = window_location(group);
            windows.push(WindowStatus {
                group: group.to_string(),
                kind,
                location,
                watermark_time: secs,
                watermark_time_text: secs.map(rfc3339),
                lag_secs: secs.map(|s| i64::from(now) - i64::from(s)),
                counts: Counts::default(),
            });
        } else {
            prefixes.insert(key.clone(), prefix_status(&key, Some(&value), now));
        }
    }
    // Longer locations first, so an entry counts in the most specific window.
    windows.sort_by_key(|w| std::cmp::Reverse(w.location.len()));

    let mut counts = Counts::default();
    let mut other = Counts::default();
    let mut failed = Vec::new();
    let mut open = Vec::new();
    for (id, e) in ledger.entries_under("")? {
        counts.add(e.status);
        let slot = match region_prefix(&id) {
            Some(p) if prefixes.contains_key(p) => Slot::Prefix(p.to_string()),
            region => match windows.iter().position(|w| id.starts_with(&w.location)) {
                Some(i) => Slot::Window(i),
                None => match region {
                    Some(p) if p.starts_with("s3://") => Slot::Prefix(p.to_string()),
                    // A folder's objects before its first watermark.
                    _ if id.starts_with("dir:") => {
                        windows.push(WindowStatus {
                            group: "dir".into(),
                            kind: "folder",
                            location: "dir:".into(),
                            watermark_time: None,
                            watermark_time_text: None,
                            lag_secs: None,
                            counts: Counts::default(),
                        });
                        Slot::Window(windows.len() - 1)
                    }
                    _ => Slot::Other,
                },
            },
        };
        match slot {
            Slot::Prefix(p) => prefixes
                .entry(p.clone())
                .or_insert_with(|| prefix_status(&p, None, now))
                .counts
                .add(e.status),
            Slot::Window(i) => windows[i].counts.add(e.status),
            Slot::Other => other.add(e.status),
        }
        match e.status {
            Status::Failed => failed.push(failed_object(id, e)),
            Status::Open => open.push(open_object(id, e, now)),
            Status::Done => {}
        }
    }
    windows.sort_by(|a, b| a.group.cmp(&b.group));
    // Troubled objects first: the most failed attempts, then the id.
    open.sort_by(|a: &OpenObject, b| b.attempts.cmp(&a.attempts).then(a.id.cmp(&b.id)));
    Ok(StatusReport {
        ledger: path.display().to_string(),
        now,
        now_text: rfc3339(now),
        counts,
        prefixes: prefixes.into_values().collect(),
        windows,
        other,
        failed,
        open,
    })
}

fn failed_object(id: String, e: Entry) -> FailedObject {
    FailedObject {
        id,
        reason: e.reason,
        position: e.position,
        size: e.size,
        failed_at: e.changed_at,
        failed_at_text: rfc3339(e.changed_at),
    }
}

fn open_object(id: String, e: Entry, now: u32) -> OpenObject {
    OpenObject {
        id,
        position: e.position,
        attempts: e.attempts,
        next_try: e.not_before,
        next_try_text: rfc3339(e.not_before),
        due: e.not_before <= now,
        last_error: (!e.reason.is_empty()).then_some(e.reason),
        size: e.size,
    }
}

/// A time group's kind and the ids its entries start with.
fn window_location(group: &str) -> (&'static str, String) {
    if let Some(location) = group.strip_prefix("flat:") {
        ("flat", location.to_string())
    } else if group == "dir" {
        ("folder", "dir:".to_string())
    } else {
        ("other", format!("{group}:"))
    }
}

/// The parts of a CloudTrail prefix id `s3://BUCKET/[P/]AWSLogs/[o-ORG/]ACCOUNT/CloudTrail/REGION/`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrefixParts<'a> {
    pub bucket: Option<&'a str>,
    /// Everything up to the account: `s3://BUCKET/[P/]AWSLogs/[o-ORG/]`.
    pub trail: Option<&'a str>,
    pub organization: Option<&'a str>,
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
}

pub fn prefix_parts(prefix: &str) -> PrefixParts<'_> {
    let bucket = prefix
        .strip_prefix("s3://")
        .and_then(|r| r.split('/').next())
        .filter(|b| !b.is_empty());
    let mut parts = PrefixParts {
        bucket,
        ..PrefixParts::default()
    };
    let Some(at) = prefix.find("AWSLogs/").map(|i| i + "AWSLogs/".len()) else {
        return parts;
    };
    let levels: Vec<&str> = prefix[at..].split('/').collect();
    let Some(ct) = levels.iter().position(|l| *l == "CloudTrail") else {
        return parts;
    };
    parts.region = levels.get(ct + 1).copied().filter(|r| !r.is_empty());
    if ct >= 1 {
        let account = levels[ct - 1];
        parts.account = Some(account);
        if ct >= 2 && levels[ct - 2].starts_with("o-") {
            parts.organization = Some(levels[ct - 2]);
        }
        // The account level starts right after the levels before it.
        let before: usize = levels[..ct - 1].iter().map(|l| l.len() + 1).sum();
        parts.trail = Some(&prefix[..at + before]);
    }
    parts
}

fn prefix_status(prefix: &str, watermark: Option<&str>, now: u32) -> PrefixStatus {
    let parts = prefix_parts(prefix);
    let day = watermark
        .and_then(|w| w.strip_prefix(prefix))
        .and_then(key_day);
    let from_name = watermark.and_then(file_time);
    let (time, lag_from) = match (from_name, day) {
        (Some(t), _) => (Some(t), Some("file name")),
        (None, Some(d)) => (u32::try_from((d + 1) * 86_400).ok(), Some("end of day")),
        (None, None) => (None, None),
    };
    PrefixStatus {
        prefix: prefix.to_string(),
        bucket: parts.bucket.map(str::to_string),
        organization: parts.organization.map(str::to_string),
        account: parts.account.map(str::to_string),
        region: parts.region.map(str::to_string),
        watermark: watermark.map(str::to_string),
        day: day.map(|d| day_path(d).replace('/', "-")),
        watermark_time: time,
        watermark_time_text: time.map(rfc3339),
        lag_from,
        lag_secs: time.map(|t| i64::from(now) - i64::from(t)),
        counts: Counts::default(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u32) -> String {
    let days = i64::from(secs / 86_400);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A duration for people: `45s`, `12m`, `3h 05m`, `2d 04h`; negative ones (a clock ahead)
/// with a minus.
pub fn human_duration(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let text = if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}d {:02}h", s / 86_400, s / 3600 % 24)
    };
    format!("{sign}{text}")
}

/// How many open objects the text form lists (the JSON form lists all).
const OPEN_SHOWN: usize = 50;

impl StatusReport {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let c = self.counts;
        let _ = writeln!(
            out,
            "ledger {} at {}: {} entries ({} open, {} done, {} failed)",
            self.ledger,
            self.now_text,
            c.total(),
            c.open,
            c.done,
            c.failed
        );

        if !self.prefixes.is_empty() {
            out.push_str(
                "\nCloudTrail prefixes (watermark: every wanted key up to it is finished; lag: \
                 now minus its delivery time)\n",
            );
            let mut by_trail: BTreeMap<String, Vec<&PrefixStatus>> = BTreeMap::new();
            for p in &self.prefixes {
                let trail = prefix_parts(&p.prefix)
                    .trail
                    .unwrap_or(&p.prefix)
                    .to_string();
                by_trail.entry(trail).or_default().push(p);
            }
            for (trail, rows) in by_trail {
                let _ = writeln!(out, "{trail}");
                let mut table = vec![row(&[
                    "ACCOUNT",
                    "REGION",
                    "DAY",
                    "LAG",
                    "OPEN",
                    "DONE",
                    "FAILED",
                    "WATERMARK",
                ])];
                for p in rows {
                    let name = p
                        .watermark
                        .as_deref()
                        .map(|w| w.strip_prefix(p.prefix.as_str()).unwrap_or(w))
                        .map(|rest| rest.rsplit('/').next().unwrap_or(rest));
                    table.push(vec![
                        p.account.clone().unwrap_or_else(|| "?".into()),
                        p.region.clone().unwrap_or_else(|| "?".into()),
                        p.day.clone().unwrap_or_else(|| "-".into()),
                        p.lag_secs.map_or("-".into(), human_duration),
                        p.counts.open.to_string(),
                        p.counts.done.to_string(),
                        p.counts.failed.to_string(),
                        name.map_or_else(|| "(none yet)".into(), str::to_string),
                    ]);
                }
                out.push_str(&render(&table, "  "));
            }
        }

        if !self.windows.is_empty() {
            out.push_str(
                "\nTime watermarks (flat listings, folders: every wanted object that landed at \
                 or before it is finished)\n",
            );
            let mut table = vec![row(&[
                "KIND",
                "LOCATION",
                "WATERMARK",
                "LAG",
                "OPEN",
                "DONE",
                "FAILED",
            ])];
            for w in &self.windows {
                table.push(vec![
                    w.kind.to_string(),
                    w.location.clone(),
                    w.watermark_time_text.clone().unwrap_or_else(|| "-".into()),
                    w.lag_secs.map_or("-".into(), human_duration),
                    w.counts.open.to_string(),
                    w.counts.done.to_string(),
                    w.counts.failed.to_string(),
                ]);
            }
            out.push_str(&render(&table, "  "));
        }

        if self.other.total() > 0 {
            let o = self.other;
            let _ = writeln!(
                out,
                "\nOther entries (found through SQS, under no listed prefix): {} open, {} \
                 done, {} failed",
                o.open, o.done, o.failed
            );
        }

        if self.failed.is_empty() {
            out.push_str("\nNo failed objects.\n");
        } else {
            let _ = writeln!(
                out,
                "\nFailed objects ({}), kept until put back in line with \
                 `cloudtrail-s3 retry --db FILE KEY...` (or --all-failed):",
                self.failed.len()
            );
            for f in &self.failed {
                let _ = writeln!(
                    out,
                    "  {}\n      failed {} at position {}: {}",
                    f.id, f.failed_at_text, f.position, f.reason
                );
            }
        }

        if !self.open.is_empty() {
            let _ = writeln!(
                out,
                "\nOpen objects ({}), shipped (from their position) when the shipper runs:",
                self.open.len()
            );
            for o in self.open.iter().take(OPEN_SHOWN) {
                let next = if o.due {
                    "next try at the next scan".to_string()
                } else {
                    format!(
                        "next try in {} ({})",
                        human_duration(i64::from(o.next_try) - i64::from(self.now)),
                        o.next_try_text
                    )
                };
                let _ = write!(
                    out,
                    "  {}\n      position {}, {} failed attempt{}, {next}",
                    o.id,
                    o.position,
                    o.attempts,
                    if o.attempts == 1 { "" } else { "s" }
                );
                match &o.last_error {
                    Some(e) => {
                        let _ = writeln!(out, ", last error: {e}");
                    }
                    None => out.push('\n'),
                }
            }
            if self.open.len() > OPEN_SHOWN {
                let _ = writeln!(
                    out,
                    "  ... and {} more (--json lists them all)",
                    self.open.len() - OPEN_SHOWN
                );
            }
        }
        out
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn render(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        out.push_str(indent);
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// Which objects `retry` puts back.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These ids (`s3://BUCKET/KEY`, `dir:PATH`).
    Ids(Vec<String>),
    AllFailed,
}

/// Why a named object was not put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NotPutBack {
    /// Neither `s3://BUCKET/KEY` nor `dir:PATH`.
    NotAnId,
    /// The ledger has no entry (never seen, or shipped and forgotten).
    Unknown,
    /// Already waiting to be shipped.
    Open,
    /// Shipped.
    Done,
}

impl fmt::Display for NotPutBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotPutBack::NotAnId => {
                "not an object id (ids look like s3://BUCKET/KEY or dir:PATH, as `status` prints them)"
            }
            NotPutBack::Unknown => {
                "not in the ledger (never found, or shipped and forgotten after the lookback)"
            }
            NotPutBack::Open => "not failed: already open, waiting to be shipped",
            NotPutBack::Done => "not failed: already shipped",
        })
    }
}

/// What `retry` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryOutcome {
    /// Put back in line: (id, the position it resumes from).
    pub put_back: Vec<(String, u64)>,
    pub not_put_back: Vec<(String, NotPutBack)>,
}

impl RetryOutcome {
    /// Every named object was put back.
    pub fn all_put_back(&self) -> bool {
        self.not_put_back.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let n = self.put_back.len();
        if n == 0 {
            out.push_str("no objects put back in line\n");
        } else {
            let _ = writeln!(
                out,
                "put {n} failed object{} back in line ({}shipped from its position when the \
                 shipper runs):",
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "each " }
            );
            for (id, position) in &self.put_back {
                let _ = writeln!(out, "  {id} (from position {position})");
            }
        }
        if !self.not_put_back.is_empty() {
            let _ = writeln!(out, "not put back ({}):", self.not_put_back.len());
            for (id, why) in &self.not_put_back {
                let _ = writeln!(out, "  {id}: {why}");
            }
        }
        out
    }
}

/// Puts failed objects back in line (status open, position kept, no backoff), one
/// transaction; objects that are not failed are reported, not put back.
pub fn retry(ledger: &Ledger, which: &Selection, now: u32) -> Result<RetryOutcome, LedgerError> {
    let mut outcome = RetryOutcome::default();
    let mut targets: Vec<String> = Vec::new();
    match which {
        Selection::AllFailed => {
            for (id, e) in ledger.entries_under("")? {
                if e.status == Status::Failed {
                    outcome.put_back.push((id.clone(), e.position));
                    targets.push(id);
                }
            }
        }
        Selection::Ids(ids) => {
            let mut seen = BTreeSet::new();
            for id in ids {
                if !seen.insert(id.as_str()) {
                    continue;
                }
                if !(id.starts_with("s3://") || id.starts_with("dir:")) {
                    outcome.not_put_back.push((id.clone(), NotPutBack::NotAnId));
                    continue;
                }
                match ledger.entry(id)? {
                    None => outcome.not_put_back.push((id.clone(), NotPutBack::Unknown)),
                    Some(e) => match e.status {
                        Status::Failed => {
                            outcome.put_back.push((id.clone(), e.position));
                            targets.push(id.clone());
                        }
                        Status::Open => outcome.not_put_back.push((id.clone(), NotPutBack::Open)),
                        Status::Done => outcome.not_put_back.push((id.clone(), NotPutBack::Done)),
                    },
                }
            }
        }
    }
    if !targets.is_empty() {
        // The ledger is this process's alone, so what was failed above is failed still.
        let n = ledger.retry(Some(&targets), now)?;
        debug_assert_eq!(n, targets.len());
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_prefixes() {
        let p = prefix_parts("s3://b/logs/AWSLogs/o-abc123/111122223333/CloudTrail/eu-west-1/");
        assert_eq!(
            p,
            PrefixParts {
                bucket: Some("b"),
                trail: Some("s3://b/logs/AWSLogs/o-abc123/"),
                organization: Some("o-abc123"),
                account: Some("111122223333"),
                region: Some("eu-west-1"),
            }
        );
        let p = prefix_parts("s3://b/AWSLogs/1/CloudTrail/us-east-1/");
        assert_eq!(
            (p.trail, p.organization, p.account, p.region),
            (Some("s3://b/AWSLogs/"), None, Some("1"), Some("us-east-1"))
        );
        assert_eq!(prefix_parts("dir:").account, None);
    }

    #[test]
    fn times_in_file_names_and_for_people() {
        let k = "s3://b/AWSLogs/1/CloudTrail/r/2023/07/10/1_CloudTrail_r_20230710T1142Z_Ab.json.gz";
        assert_eq!(file_time(k), Some(1_688_989_320));
        assert_eq!(rfc3339(1_688_989_356), "2023-07-10T11:42:36Z");
        assert_eq!(file_time("s3://b/x/20230710T1199Z_a"), None);
        assert_eq!(file_time("s3://b/x/a.json.gz"), None);
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(750), "12m");
        assert_eq!(human_duration(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(human_duration(2 * 86_400 + 4 * 3600), "2d 04h");
        assert_eq!(human_duration(-120), "-2m");
    }

    #[test]
    fn lag_falls_back_to_the_end_of_the_watermark_day() {
        let p = "s3://b/AWSLogs/1/CloudTrail/r/";
        let s = prefix_status(
            p,
            Some(&format!("{p}2023/07/10/odd-name.json.gz")),
            1_689_000_000,
        );
        assert_eq!(s.day.as_deref(), Some("2023-07-10"));
        assert_eq!(s.lag_from, Some("end of day"));
        assert_eq!(s.watermark_time, Some(1_689_033_600));
        assert_eq!(s.lag_secs, Some(1_689_000_000 - 1_689_033_600));
    }
}
