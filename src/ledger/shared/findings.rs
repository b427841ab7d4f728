//! The shared ledger's side of [`crate::ledger::Ledger::first_report`]: a row per finding,
//! written only if missing, so of all the shippers on a table one reports it. The store
//! drops the row by its TTL.

use super::table::{LeaseKind, LeaseRow};
use super::{SharedLedger, bump};
use crate::ledger::LedgerError;

impl SharedLedger {
    /// Whether a finding's row is there (one read; see `Ledger::reported_before`).
    pub fn reported_before(&self, key: &str) -> Result<bool, LedgerError> {
        bump(&self.counts.reads);
        self.table
            .get_lease(LeaseKind::Finding, key)
            .map(|row| row.is_some())
            .map_err(|e| self.err(e))
    }

    pub fn first_report(&self, key: &str, now: u32, keep: u32) -> Result<bool, LedgerError> {
        let row = LeaseRow {
            version: 1,
            owner: Some(self.me.clone()),
            expires: Some(now.saturating_add(keep)),
            ..LeaseRow::default()
        };
        bump(&self.counts.writes);
        self.table
            .put_lease(LeaseKind::Finding, key, None, &row)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::table::MemTable;
    use super::*;

    #[test]
    fn of_two_shippers_on_one_table_one_reports_a_finding() {
        let table: Arc<MemTable> = Arc::new(MemTable::default());
        let shipper = || {
            SharedLedger::new(
                Box::new(table.clone()),
                "t",
                Duration::from_secs(60),
                3600,
                None,
            )
        };
        let (a, b) = (shipper(), shipper());
        assert!(a.first_report("k1", 10, 100).unwrap());
        assert!(!b.first_report("k1", 11, 100).unwrap());
        assert!(b.first_report("k2", 12, 100).unwrap());
        assert!(a.reported_before("k2").unwrap());
        assert!(!a.reported_before("k3").unwrap());
    }
}
