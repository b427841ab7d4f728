//! `cloudtrail-s3 status`: per account and region, where the listing stands and how far
//! behind it is, the time windows, and every failed and open object, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{human_duration, prefix_parts, rfc3339};
use crate::layout::{day_path, file_time, key_day, region_prefix};
use crate::ledger::{Entry, Ledger, LedgerError, Status};

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

#[cfg(test)]
mod tests {
    use super::*;

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
