//! The shared ledger's side of [`crate::ledger::Ledger::deliver_ahead`]: each object's row
//! takes the spans by a conditional write, as every other change does.

use std::sync::Arc;

use super::{SharedLedger, Step};
use crate::ledger::LedgerError;
use crate::ledger::entry::Span;

impl SharedLedger {
    pub fn deliver_ahead(&self, spans: &[(Arc<str>, Span)]) -> Result<(), LedgerError> {
        for (id, span) in spans {
            self.change(id, |row| match row {
                Some(r) if !r.entry.is_finished() => {
                    let mut row = r.clone();
                    row.entry.deliver(*span);
                    if row.entry == r.entry {
                        Step::Keep(())
                    } else {
                        Step::Write(row, ())
                    }
                }
                _ => Step::Keep(()),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::table::MemTable;
    use super::*;
    use crate::ledger::mark::Mark;
    use crate::ledger::{Backoff, Claimable, Honour};

    #[test]
    fn a_row_takes_ranges_ahead_and_the_next_holder_reads_them() {
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
        let a = shipper();
        let x = || Claimable {
            id: "x",
            size: 1,
            modified: (1, 0),
            forget_by: None,
        };
        assert_eq!(a.claim(&[x()], 10, Honour::Backoff).unwrap().len(), 1);
        let mark = Mark {
            id: "x".into(),
            position: 5,
            events: 5,
            ..Mark::default()
        };
        a.commit(&[mark], 11, Backoff::TRANSIENT).unwrap();
        a.deliver_ahead(&[("x".into(), (9, 14))]).unwrap();
        assert_eq!(a.let_go_all(), 0);
        let b = shipper();
        assert_eq!(b.claim(&[x()], 12, Honour::Backoff).unwrap().len(), 1);
        let e = b.entry("x").unwrap().unwrap();
        assert_eq!((e.position, e.ahead), (5, vec![(9, 14)]));
    }
}
