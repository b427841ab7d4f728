//! The operator's commands over a stopped shipper's ledger: `status` (how far each listed
//! prefix has got, how far behind it is, what failed and what waits to be tried again) and
//! `retry` (put failed objects back in line).
//!
//! Both open the ledger file itself, so they need the shipper stopped: the file takes one
//! process at a time, since two writers would undo each other's work. [`open`] says so
//! plainly rather than waiting or reading a file that changes under it. A shared ledger
//! table ([`open_shared`]) is read and changed while shippers run. A running instance with
//! `metrics.listen` answers both itself (`GET /status`, `POST /retry`, see
//! `engine::answer`), through the ledger it holds.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

mod retry;
mod status;
pub mod verify;

pub use retry::{NotPutBack, RetryOutcome, Selection, retry};
pub use status::{
    Counts, FailedObject, OpenObject, PrefixStatus, StatusReport, WindowStatus, status,
};

use crate::ledger::{Ledger, LedgerError};
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

/// Opens a shared ledger table (`ledger.dynamodb_table`) for an operator command. Unlike
/// the file, the table may be read and changed while shippers run: every change is a
/// conditional write, and `retry` clears an object's lease so any shipper takes it.
pub fn open_shared(
    table: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<Ledger, OpenError> {
    use crate::ledger::shared::{DynamoTable, SharedLedger};
    let t = DynamoTable::open_existing(table, endpoint, region).map_err(|e| {
        OpenError::Ledger(LedgerError::Shared {
            table: table.to_string(),
            reason: e.0,
        })
    })?;
    // Commits never come from here: the lease time and how long done rows are kept only
    // matter to shippers.
    let shared = SharedLedger::new(
        Box::new(t),
        table,
        std::time::Duration::from_secs(60),
        0,
        None,
    );
    Ledger::with_shared(shared).map_err(OpenError::Ledger)
}

/// The parts of a CloudTrail prefix id `s3://BUCKET/[P/]AWSLogs/[o-ORG/]ACCOUNT/KIND/REGION/`
/// (`KIND` is `CloudTrail` or another kind's folder, `CloudTrail-Insight`, …).
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
    let Some(ct) = levels
        .iter()
        .position(|l| crate::layout::Kind::from_folder(l).is_some())
    else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::file_time;

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
        let p = prefix_parts("s3://b/AWSLogs/1/CloudTrail-Insight/us-east-1/");
        assert_eq!((p.account, p.region), (Some("1"), Some("us-east-1")));
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
}
