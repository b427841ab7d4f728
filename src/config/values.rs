//! Value types of settings that the parts below the configuration apply: the ledger's
//! retry policy (`retry_backoff`, `denied_backoff`) and the metrics' per-region series
//! (`metrics.per_region`). Defined here so the configuration depends on none of those parts.

/// How an object that failed transiently is retried: the wait doubles from `first` after
/// each failure in a row, up to `cap` (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: u32,
    pub cap: u32,
}

impl Backoff {
    /// Throttling, timeouts, broken connections: seconds to a quarter of an hour.
    pub const TRANSIENT: Backoff = Backoff { first: 5, cap: 900 };
    /// Access denied and other settings problems: minutes to an hour, since permissions
    /// and keys get fixed without a restart.
    pub const DENIED: Backoff = Backoff {
        first: 300,
        cap: 3600,
    };

    /// Seconds to wait after the `attempt`-th failure in a row (1-based).
    pub fn secs(self, attempt: u32) -> u32 {
        self.first
            .saturating_mul(1 << attempt.saturating_sub(1).min(12))
            .min(self.cap.max(self.first))
    }
}

/// Which accounts and regions get their own series on `/metrics` (`metrics.per_region`).
/// An organization has thousands: four series each made a 2.8 MB page of 34,000 series
/// at 500 accounts x 17 regions, more than one scrape target should serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PerRegion {
    /// Only the silent ones, with `silent` and `lag_seconds`: what an alert needs.
    #[default]
    Silent,
    /// Every one, with all four series.
    All,
    /// None: the totals alone.
    None,
}
