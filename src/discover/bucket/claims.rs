//! How much of a backfill one scan takes on: the claim limit, shared among the region
//! prefixes, and what a scan leaves for the next.

use std::num::NonZeroUsize;

/// How many objects one scan claims at most by default (`scan_claims`), shared among its
/// region prefixes, so that the ledger holds a stretch of a backfill rather than its whole
/// window: a claimed object's entry stays until a later scan moves its prefix's watermark
/// over it (about 365 bytes each; a month of 510 busy prefixes, 4.4 million objects, made a
/// 1.6 GB ledger file when the first scan claimed it all). The scan that leaves keys
/// unclaimed is followed by the next as soon as half of what is in flight has finished, so
/// a backfill is not slowed by `scan_interval`.
pub const CLAIMS_PER_SCAN: usize = crate::config::DEFAULT_SCAN_CLAIMS;
/// Each prefix claims at least this many a scan (or the whole limit, if smaller), however
/// many prefixes share it: an organization's thousands of prefixes each move every scan.
pub const CLAIMS_PER_PREFIX_MIN: usize = 25;

/// How many objects a scan claims in each prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimLimit {
    /// This many shared among the prefixes, at least [`CLAIMS_PER_PREFIX_MIN`] each.
    PerScan(NonZeroUsize),
    /// This many in each prefix (the simulation draws small ones).
    PerPrefix(NonZeroUsize),
}

impl Default for ClaimLimit {
    fn default() -> Self {
        ClaimLimit::PerScan(NonZeroUsize::new(CLAIMS_PER_SCAN).unwrap_or(NonZeroUsize::MIN))
    }
}

impl ClaimLimit {
    /// The limit of each of `prefixes` prefixes.
    pub fn per_prefix(self, prefixes: usize) -> usize {
        match self {
            ClaimLimit::PerScan(n) => {
                (n.get() / prefixes.max(1)).max(CLAIMS_PER_PREFIX_MIN.min(n.get()))
            }
            ClaimLimit::PerPrefix(n) => n.get(),
        }
    }
}

/// What a scan left for the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Wanted keys listed past the claim limit of their prefix: neither looked up nor
    /// claimed, and holding their prefix's watermark. More than zero: scan again soon.
    pub left: usize,
}
