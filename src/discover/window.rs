//! The time window of flat listings, folders and SQS: what is remembered, and for how long.
//!
//! Where keys carry no day folder to order them by, the low watermark is a time: every
//! wanted object that landed at or before it is finished. Listings skip objects that landed
//! more than `lookback` before it, and the ledger forgets finished objects as old, so both
//! move together and the state stays the size of the lookback.

use crate::ledger::{Ledger, LedgerError};

/// The landing time below which listings skip objects: `lookback` before the watermark.
pub fn floor(ledger: &Ledger, group: &str, lookback: u32) -> Result<Option<u32>, LedgerError> {
    Ok(ledger
        .time_watermark(group)?
        .map(|w| w.saturating_sub(lookback)))
}

/// Moves the group's watermark up to just before the first unfinished object (never past
/// `now`) and forgets what fell behind the lookback. `items` are the wanted objects of one
/// listing: (landing time, finished).
pub fn advance(
    ledger: &Ledger,
    group: &str,
    lookback: u32,
    items: &[(u32, bool)],
    now: u32,
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
    let w = ledger.time_watermark(group)?.unwrap_or(to);
    ledger.forget_older(group, w.saturating_sub(lookback))?;
    Ok(())
}
