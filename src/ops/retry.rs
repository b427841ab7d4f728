//! `cloudtrail-s3 retry`: puts failed objects back in line, all of them or the ones named,
//! and says which could not be.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::ledger::{Ledger, LedgerError, Status};

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
        // Run by the command, the ledger is this process's alone, so what was failed above
        // is failed still; on a running instance (`POST /retry`) an SQS redelivery may have
        // put one back meanwhile, which changes nothing for it.
        ledger.retry(Some(&targets), now)?;
    }
    Ok(outcome)
}
