//! What an audit reports: its counters for `/metrics`, each digest's hour as found so far,
//! and what a pass found.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::Location;

/// What the audit did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    pub passes: AtomicU64,
    pub digests: AtomicU64,
    pub files_verified: AtomicU64,
    pub findings: AtomicU64,
    /// Files shipped from a digest (nothing else had found them).
    pub shipped_from_digests: AtomicU64,
    /// Digests announced by a notification and read at once.
    pub announced: AtomicU64,
    /// Digests announced out of order (left for a listing pass).
    pub deferred: AtomicU64,
}

impl Counts {
    /// Each counter with its metric name and help.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "digest_passes_total",
                "passes over CloudTrail's digests",
                get(&self.passes),
            ),
            (
                "digests_read_total",
                "digests read (form, place, signature, chain checked)",
                get(&self.digests),
            ),
            (
                "digest_files_verified_total",
                "log files listed in a digest found shipped (or present) with its SHA-256",
                get(&self.files_verified),
            ),
            (
                "digest_findings_total",
                "digest findings: missing, altered, not shipped or failed files, bad signatures, chain gaps, moved digests",
                get(&self.findings),
            ),
            (
                "digest_files_shipped_total",
                "files a digest listed that nothing else had found, shipped from the digest",
                get(&self.shipped_from_digests),
            ),
            (
                "digests_announced_total",
                "digests announced by an SQS notification and read at once, without a listing",
                get(&self.announced),
            ),
            (
                "digests_deferred_total",
                "digests announced out of order (the one before not read yet), left for the next listing pass",
                get(&self.deferred),
            ),
        ]
    }
}

/// One digest's hour, as found so far.
#[derive(Debug, Clone, Serialize)]
pub struct HourReport {
    pub account: String,
    pub region: String,
    pub trail: String,
    /// The digest's end time (the hour it covers ends here).
    pub end: String,
    pub digest: String,
    pub complete: bool,
    pub logs: usize,
    /// Listed files the ledger says were shipped with the digest's hash (with a ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped: Option<usize>,
    /// What is wrong, one line each (missing and altered log files with their keys).
    pub problems: Vec<String>,
    /// Listed files the ledger does not know and may have forgotten (the digest is older
    /// than it remembers): not judged.
    #[serde(skip_serializing_if = "is_zero")]
    pub unjudged: usize,
    /// Listed files not settled yet (within the grace time, or being shipped).
    #[serde(skip_serializing_if = "is_zero")]
    pub pending: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a pass found.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Every digest read in this pass or still tracked, as it stands.
    pub hours: Vec<HourReport>,
    /// Findings new in this pass, each once over the audit's life: a digest's problems and
    /// the chain's (gaps, restarts, silent streams).
    pub findings: Vec<String>,
    /// Findings of the chain and of streams (also in `findings` when new).
    pub chain: Vec<String>,
    /// Files a digest lists that are in the bucket and unknown to the ledger past the grace
    /// time: to be shipped now.
    pub heal: Vec<(Location, u64)>,
    /// Requests that failed: what could not be checked (tried again next pass).
    pub errors: Vec<String>,
}
