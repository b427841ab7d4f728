//! Ranges delivered ahead of an object's committed position: what a graceful stop records
//! of the batches the destination acknowledged behind one it left unanswered, so that the
//! next run passes them rather than sending them again (see [`Entry::deliver`]).

use std::sync::Arc;

use super::entry::{Entry, Span};
use redb::ReadableTable;

use super::{Ledger, LedgerError, OBJECTS};

impl Ledger {
    /// Records each `(id, span)` as delivered, in one transaction. An object without an
    /// entry, or finished, is left alone: the spans only ever spare a repeat.
    pub fn deliver_ahead(&self, spans: &[(Arc<str>, Span)]) -> Result<(), LedgerError> {
        if spans.is_empty() {
            return Ok(());
        }
        if let Some(sh) = &self.shared {
            return sh.deliver_ahead(spans);
        }
        self.write(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            for (id, span) in spans {
                let Some(mut e) = table.get(&**id)?.and_then(|v| Entry::decode(v.value())) else {
                    continue;
                };
                if e.is_finished() {
                    continue;
                }
                e.deliver(*span);
                table.insert(&**id, e.encode().as_slice())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{claim, mark};
    use super::*;
    use crate::ledger::Backoff;

    #[test]
    fn ranges_ahead_are_kept_and_taken_in_when_the_commits_reach_them() {
        let l = Ledger::open(None, None, 0).unwrap();
        assert_eq!(claim(&l, &["x"], 10), ["x"]);
        l.commit(&[mark("x", 5, 5, None)], 11, Backoff::TRANSIENT)
            .unwrap();
        l.deliver_ahead(&[("x".into(), (9, 14)), ("y".into(), (0, 3))])
            .unwrap();
        let e = l.entry("x").unwrap().unwrap();
        assert_eq!((e.position, e.ahead), (5, vec![(9, 14)]));
        assert_eq!(l.entry("y").unwrap(), None, "no entry is made for a range");
        l.commit(&[mark("x", 4, 9, None)], 12, Backoff::TRANSIENT)
            .unwrap();
        let e = l.entry("x").unwrap().unwrap();
        assert_eq!((e.position, e.ahead), (14, vec![]));
    }
}
