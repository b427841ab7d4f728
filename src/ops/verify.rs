//! `verify`: proves, for a time range, that every log file CloudTrail wrote into a bucket
//! is there and unaltered (and, with the ledger, was shipped), from CloudTrail's signed
//! digests: one strict pass of [`Audit`].
//!
//! For each digest in the range, in time order per trail, account and region: its form
//! (one gzip member, the documented fields), its place (where it says it is), its signature
//! (CloudTrail's public key matched by fingerprint), its link to the previous digest (walked
//! forwards, so two deleted digests in a row are one gap reported at the next digest, where
//! aws-cli's backwards walk reports only the first), and each log file it lists: present,
//! and with the SHA-256 it names over its uncompressed bytes. A stream whose last digest is
//! more than two hours older than the end of the range is reported silent.
//!
//! With the shipper's ledger, a listed file is checked against what was shipped: the
//! engine keeps (with `digest.validate`) the SHA-256 of every file it ships, so such a
//! file costs no download, and a file CloudTrail wrote that the shipper never shipped (a
//! notification lost, an object deleted before it was read) is reported as not shipped.

use serde::Serialize;

use crate::digest::audit::{Audit, remembered};
pub use crate::digest::audit::{Fetched, HourReport, Reader, S3Reader};
use crate::digest::keys::{KeyRing, KeySource};
use crate::discover::listing::Lister;
use crate::layout::{self, Base};
use crate::ledger::Ledger;
use crate::timestamp::EventTime;

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub bucket: String,
    pub from: String,
    pub to: String,
    pub hours: Vec<HourReport>,
    /// Findings of the chain and of streams, not of one hour's files: gaps, restarts,
    /// silent streams.
    pub chain: Vec<String>,
    /// Requests that failed (listings, reads): what could not be checked.
    pub errors: Vec<String>,
}

impl VerifyReport {
    /// Every hour complete, the chain unbroken and everything readable.
    pub fn all_verified(&self) -> bool {
        self.hours.iter().all(|h| h.complete) && self.chain.is_empty() && self.errors.is_empty()
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let complete = self.hours.iter().filter(|h| h.complete).count();
        let logs: usize = self.hours.iter().map(|h| h.logs).sum();
        let _ = writeln!(
            out,
            "s3://{} from {} to {}: {} digests ({} complete, {} incomplete), {} log files listed",
            self.bucket,
            self.from,
            self.to,
            self.hours.len(),
            complete,
            self.hours.len() - complete,
            logs
        );
        for h in &self.hours {
            let _ = writeln!(
                out,
                "  {} {} {} {}: {} ({} log files)",
                h.account,
                h.region,
                h.trail,
                h.end,
                if h.complete { "complete" } else { "INCOMPLETE" },
                h.logs
            );
            for p in &h.problems {
                let _ = writeln!(out, "    {p}");
            }
        }
        for c in &self.chain {
            let _ = writeln!(out, "  chain: {c}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "  could not check: {e}");
        }
        out
    }
}

/// Verifies the digests of `lister`'s bucket that cover `from`..`to`, under the
/// CloudTrail layout `base` (a literal `…/AWSLogs/` folder, or searched when `None`).
pub async fn verify<L: Lister, R: Reader, K: KeySource>(
    lister: L,
    reader: R,
    keys: KeyRing<K>,
    ledger: Option<(&Ledger, u32)>,
    base: Option<String>,
    from: EventTime,
    to: EventTime,
) -> VerifyReport {
    let bucket = lister.bucket().to_string();
    let mut audit = Audit::new(lister, reader, keys, base, 0, true);
    // A file under a digest older than the ledger surely remembers may have been shipped
    // and forgotten: not judged (`lookback`).
    if let Some((_, lookback)) = ledger {
        audit = audit.remembering(remembered(lookback));
    }
    let ledger = ledger.map(|(l, _)| l);
    let pass = audit.pass(ledger, from, to, EventTime::now()).await;
    VerifyReport {
        bucket,
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        hours: pass.hours,
        chain: pass.chain,
        errors: pass.errors,
    }
}

/// The layout's literal base folder for `verify`, from a `path_expression`.
pub fn base_of(expr: &crate::pathexpr::PathExpression) -> Option<String> {
    match layout::base(expr) {
        Some(Base::Literal(s)) => Some(s.to_string()),
        _ => None,
    }
}
