//! What the shared ledger did, counted for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the shared ledger did, for `/metrics`: its requests, and the events of its leases.
#[derive(Debug, Default)]
pub struct Counts {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Writes refused because another write came first (each is re-read and decided again).
    pub conflicts: AtomicU64,
    pub queries: AtomicU64,
    /// Objects taken over from another shipper whose lease expired.
    pub takeovers: AtomicU64,
    /// Claims that found another shipper's live lease.
    pub held_elsewhere: AtomicU64,
    /// Leases this shipper held that another took over (renewed too late).
    pub leases_lost: AtomicU64,
    /// Listed prefixes this shipper took (free, a stopped or dead shipper's, or its share
    /// from the shipper holding the most).
    pub prefixes_taken: AtomicU64,
}

impl Counts {
    /// Each counter with its metric name and help.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 8] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "ledger_reads_total",
                "shared ledger rows read",
                get(&self.reads),
            ),
            (
                "ledger_writes_total",
                "shared ledger conditional writes",
                get(&self.writes),
            ),
            (
                "ledger_write_conflicts_total",
                "shared ledger writes refused because another came first (re-read and decided again)",
                get(&self.conflicts),
            ),
            (
                "ledger_queries_total",
                "shared ledger queries of its open rows",
                get(&self.queries),
            ),
            (
                "ledger_takeovers_total",
                "objects taken over from a shipper whose lease expired",
                get(&self.takeovers),
            ),
            (
                "ledger_held_elsewhere_total",
                "claims that found another shipper's live lease",
                get(&self.held_elsewhere),
            ),
            (
                "ledger_leases_lost_total",
                "leases of this shipper that another took over (renewed too late)",
                get(&self.leases_lost),
            ),
            (
                "ledger_prefixes_taken_total",
                "listed prefixes this shipper took over to list (free, a stopped or dead shipper's, or its share)",
                get(&self.prefixes_taken),
            ),
        ]
    }
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
