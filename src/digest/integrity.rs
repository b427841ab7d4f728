//! Integrity per account and region, as the digest passes since this start settled it:
//! what the running instance's `GET /status` shows beside the ledger's report. An hour is
//! counted once, when its digest's files are all settled (verified, or a finding), so a
//! pass that reads the same hour again adds nothing. Counted since the start: the ledger
//! keeps the findings themselves (`Ledger::first_report`), not these tallies.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::report::HourReport;

/// Problems kept per account and region for the report, newest last.
const PROBLEMS_KEPT: usize = 10;

/// One account and region.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IntegrityRow {
    pub account: String,
    pub region: String,
    /// Hours whose digest verified every file it lists.
    pub hours_complete: u64,
    /// Hours with a finding (a file missing, altered, not shipped or failed).
    pub hours_incomplete: u64,
    /// Hours whose files the ledger no longer remembers (older than its lookback): not judged.
    pub hours_unjudged: u64,
    /// Hours read and still waiting on files (within `digest.grace`, or being shipped).
    pub hours_pending: u64,
    /// The end of the newest digest read (RFC 3339).
    pub newest_digest_end: String,
    /// The latest problems, `digest key: problem`, at most ten.
    pub problems: Vec<String>,
}

/// The tallies, shared by the digest loop (writer) and the HTTP answers (readers).
#[derive(Debug, Default)]
pub struct Integrity {
    rows: Mutex<BTreeMap<(String, String), IntegrityRow>>,
}

impl Integrity {
    /// Takes in one pass's hours: the settled ones are counted, the rest are pending now.
    pub fn record(&self, hours: &[HourReport]) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        for row in rows.values_mut() {
            row.hours_pending = 0;
        }
        for h in hours {
            let row = rows
                .entry((h.account.clone(), h.region.clone()))
                .or_insert_with(|| IntegrityRow {
                    account: h.account.clone(),
                    region: h.region.clone(),
                    ..IntegrityRow::default()
                });
            if h.end > row.newest_digest_end {
                row.newest_digest_end.clone_from(&h.end);
            }
            if h.pending > 0 {
                row.hours_pending += 1;
            } else if h.complete {
                row.hours_complete += 1;
            } else if !h.problems.is_empty() {
                row.hours_incomplete += 1;
                row.problems
                    .extend(h.problems.iter().map(|p| format!("{}: {p}", h.digest)));
                let over = row.problems.len().saturating_sub(PROBLEMS_KEPT);
                row.problems.drain(..over);
            } else {
                row.hours_unjudged += 1;
            }
        }
    }

    /// Every account and region seen, in order.
    pub fn rows(&self) -> Vec<IntegrityRow> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(end: &str, complete: bool, problems: &[&str], pending: usize) -> HourReport {
        HourReport {
            account: "111122223333".into(),
            region: "us-east-1".into(),
            trail: "t".into(),
            end: end.into(),
            digest: format!("digest-{end}"),
            complete,
            logs: 3,
            shipped: Some(3),
            problems: problems.iter().map(|p| p.to_string()).collect(),
            unjudged: 0,
            pending,
        }
    }

    #[test]
    fn an_hour_counts_once_when_settled() {
        let i = Integrity::default();
        // First pass: 12:00 verified, 13:00 still waiting on a file.
        i.record(&[
            hour("2023-07-10T12:00:00Z", true, &[], 0),
            hour("2023-07-10T13:00:00Z", false, &[], 1),
        ]);
        let r = &i.rows()[0];
        assert_eq!((r.hours_complete, r.hours_pending), (1, 1));
        // Next pass: 13:00 settles with a finding; 12:00 is not read again.
        i.record(&[hour("2023-07-10T13:00:00Z", false, &["missing: k"], 0)]);
        let r = &i.rows()[0];
        assert_eq!(
            (r.hours_complete, r.hours_incomplete, r.hours_pending),
            (1, 1, 0)
        );
        assert_eq!(r.problems, ["digest-2023-07-10T13:00:00Z: missing: k"]);
        assert_eq!(r.newest_digest_end, "2023-07-10T13:00:00Z");
    }

    #[test]
    fn problems_keep_the_latest_ten() {
        let i = Integrity::default();
        for n in 0..15 {
            i.record(&[hour(&format!("T{n:02}"), false, &["p"], 0)]);
        }
        let r = &i.rows()[0];
        assert_eq!(r.hours_incomplete, 15);
        assert_eq!(r.problems.len(), 10);
        assert_eq!(r.problems[0], "digest-T05: p");
    }
}
