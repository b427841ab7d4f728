//! Integrity findings already reported, so that each is reported once: across restarts
//! (an audit reads the digests of its whole window again when it starts), and across the
//! shippers sharing a table (each would find the same fault). Kept `keep` seconds, the
//! span over which an audit may read the digest again.

use redb::{ReadableTable, TableDefinition};

use super::{Ledger, LedgerError};

/// Finding (the SHA-256 of its text, hex) -> when it was first reported (Unix seconds).
const FINDINGS: TableDefinition<&str, u32> = TableDefinition::new("findings");

/// The SHA-256 of a finding's text, hex: a fixed-size key whatever the text's length.
fn key_of(finding: &str) -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, finding.as_bytes());
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Ledger {
    /// Whether `finding` was reported already (here, or by another shipper on a shared
    /// table), without recording anything: a finding sent as a record is recorded only
    /// once the host has it ([`Ledger::first_report`] at its commit).
    pub fn reported_before(&self, finding: &str) -> Result<bool, LedgerError> {
        let key = key_of(finding);
        if let Some(sh) = &self.shared {
            return sh.reported_before(&key);
        }
        self.read(|txn| match txn.open_table(FINDINGS) {
            Ok(t) => Ok(t.get(key.as_str())?.is_some()),
            // No finding recorded yet in this file.
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(e.into()),
        })
    }

    /// Records `finding` as reported at `now`; `true` the first time (report it), `false`
    /// when this ledger, or another shipper on a shared table, reported it already.
    pub fn first_report(&self, finding: &str, now: u32, keep: u32) -> Result<bool, LedgerError> {
        let key = key_of(finding);
        if let Some(sh) = &self.shared {
            return sh.first_report(&key, now, keep);
        }
        self.write(|txn| {
            let mut t = txn.open_table(FINDINGS)?;
            if t.get(key.as_str())?.is_some() {
                return Ok(false);
            }
            // Findings are few (faults, not files): dropping the old ones as a new one is
            // recorded keeps the table small without a schedule of its own.
            t.retain(|_, at| at.saturating_add(keep) >= now)?;
            t.insert(key.as_str(), now)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_finding_is_reported_once_until_it_is_kept_no_longer() {
        let l = Ledger::open(None, None, 0).unwrap();
        assert!(l.first_report("a: missing", 100, 50).unwrap());
        assert!(!l.first_report("a: missing", 120, 50).unwrap());
        assert!(l.reported_before("a: missing").unwrap());
        assert!(!l.reported_before("b: missing").unwrap());
        assert!(
            l.first_report("b: altered", 200, 50).unwrap(),
            "a is dropped now"
        );
        assert!(l.first_report("a: missing", 201, 50).unwrap());
    }
}
