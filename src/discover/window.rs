//! The time window of flat listings, folders and SQS: what is remembered, and for how long.
//!
//! Where keys carry no day folder to order them by, the low watermark is a time: every
//! wanted object that landed at or before it is finished. Listings skip objects that landed
//! more than `lookback` before it, and the ledger forgets finished objects as old, so both
//! move together and the state stays the size of the lookback.

use crate::ledger::{Ledger, LedgerError};

/// The landing time below which listings skip objects: `lookback` before the watermark.
/// Never below the group's forget line, whatever `lookback` has become since.
pub fn floor(ledger: &Ledger, group: &str, lookback: u32) -> Result<Option<u32>, LedgerError> {
    let by_mark = ledger
        .time_watermark(group)?
        .map(|w| w.saturating_sub(lookback));
    Ok(by_mark.max(ledger.time_floor(group)?))
}

/// Whether [`advance`] forgets the finished entries that fell behind the lookback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    ByTime,
    /// The caller forgets by other means (a folder: once the file is gone).
    Never,
}

/// Moves the group's watermark up to just before the first unfinished object (never past
/// `now`) and forgets what fell behind the lookback (with [`Forget::ByTime`]). `items` are
/// the wanted objects of one listing: (landing time, finished).
pub fn advance(
    ledger: &Ledger,
    group: &str,
    lookback: u32,
    items: &[(u32, bool)],
    now: u32,
    forget: Forget,
) -> Result<(), LedgerError> {
    let first_open = items
        .iter()
        .filter(|(_, done)| !done)
        .map(|(t, _)| *t)
        .min();
    let newest_done = items
        .iter()
        .filter(|(_, done)| *done)
        .map(|(t, _)| *t)
        .max();
    let Some(newest_done) = newest_done else {
        return Ok(());
    };
    let mut to = newest_done.min(now);
    if let Some(open) = first_open {
        if open == 0 {
            return Ok(());
        }
        to = to.min(open - 1);
    }
    ledger.advance_time(group, to)?;
    if forget == Forget::ByTime {
        let w = ledger.time_watermark(group)?.unwrap_or(to);
        ledger.forget_older(group, w.saturating_sub(lookback))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::mark::{End, Mark};
    use crate::ledger::{Backoff, Claimable, Honour};

    #[test]
    fn the_time_watermark_stops_before_the_first_open_object_and_forgets_behind_the_lookback() {
        let l = Ledger::open(None, None, 0).unwrap();
        let objects = [
            ("s3://b/a", 1_000),
            ("s3://b/b", 5_000),
            ("s3://b/c", 9_000),
        ];
        let claim: Vec<Claimable<'_>> = objects
            .iter()
            .map(|(id, t)| Claimable {
                id,
                size: 1,
                modified: (*t, 0),
                forget_by: Some(("flat:x", *t)),
            })
            .collect();
        l.claim(&claim, 10_000, Honour::Backoff).unwrap();
        let done = |id: &str| Mark {
            id: id.into(),
            end: Some(End::Done),
            ..Mark::default()
        };
        l.commit(
            &[done("s3://b/a"), done("s3://b/c")],
            10_000,
            Backoff::TRANSIENT,
        )
        .unwrap();
        // b is open: the watermark stops just before it, and nothing is forgotten yet.
        let items = [(1_000, true), (5_000, false), (9_000, true)];
        advance(&l, "flat:x", 3_000, &items, 10_000, Forget::ByTime).unwrap();
        assert_eq!(l.time_watermark("flat:x").unwrap(), Some(4_999));
        assert_eq!(floor(&l, "flat:x", 3_000).unwrap(), Some(1_999));
        assert!(
            l.entry("s3://b/a").unwrap().is_none(),
            "done and behind the lookback"
        );
        assert!(l.entry("s3://b/c").unwrap().is_some());
        // b finishes: the watermark moves to the newest finished object, never past now.
        l.commit(&[done("s3://b/b")], 10_001, Backoff::TRANSIENT)
            .unwrap();
        let items = [(5_000, true), (9_000, true)];
        advance(&l, "flat:x", 3_000, &items, 8_000, Forget::ByTime).unwrap();
        assert_eq!(l.time_watermark("flat:x").unwrap(), Some(8_000));
        // b landed exactly at the floor (5,000): listings still return it, so it is kept.
        assert!(l.entry("s3://b/b").unwrap().is_some());
        assert!(
            l.entry("s3://b/c").unwrap().is_some(),
            "within the lookback"
        );
        advance(&l, "flat:x", 3_000, &items, 9_500, Forget::ByTime).unwrap();
        assert_eq!(l.time_watermark("flat:x").unwrap(), Some(9_000));
        assert!(
            l.entry("s3://b/b").unwrap().is_none(),
            "behind the floor now"
        );
    }
}
