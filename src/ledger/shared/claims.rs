//! Claiming objects on the shared table: one conditional write per object takes its row
//! (or takes it over from a shipper whose lease stood still for the lease time), so no two
//! shippers ship the same object at once.

use super::*;

/// A claim's answer for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    Taken,
    /// Taken from another shipper whose lease expired.
    TakenOver,
    /// Finished, or waiting out its backoff.
    Passed,
    /// Another shipper holds a live lease on it.
    Elsewhere,
}

impl SharedLedger {
    fn claim_one(&self, o: &Claimable<'_>, now: u32, honour: Honour) -> Result<Claim, LedgerError> {
        if self.closing.load(std::sync::atomic::Ordering::Acquire) || self.known_done(o.id) {
            return Ok(Claim::Passed);
        }
        if !self
            .claiming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(o.id.to_string())
        {
            return Ok(Claim::Passed);
        }
        let outcome = self.claim_row(o, now, honour);
        self.claiming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(o.id);
        outcome
    }

    fn claim_row(&self, o: &Claimable<'_>, now: u32, honour: Honour) -> Result<Claim, LedgerError> {
        let me = self.me.clone();
        let outcome = self.change(o.id, |row| match row {
            None => Step::Write(
                Row {
                    version: 0,
                    entry: Entry::open(o.size, o.modified, now),
                    owner: Some(me.clone()),
                    lease: 1,
                    expires: None,
                },
                Claim::Taken,
            ),
            Some(r) if r.entry.is_finished() => {
                if prefixes::is_done(&r.entry) {
                    self.remember_done(o.id);
                }
                Step::Keep(Claim::Passed)
            }
            Some(r) if r.entry.not_before > now && honour == Honour::Backoff => {
                Step::Keep(Claim::Passed)
            }
            // Already this shipper's, and held here: a second claim of one object at once.
            // (A row that names this shipper but is not held here is taken again: a claim
            // whose write landed although its answer was lost, say a timeout the SDK retried
            // into a failed condition. Passing it over would leave it to nobody.)
            Some(r)
                if r.owner.as_deref() == Some(me.as_str()) && self.held().contains_key(o.id) =>
            {
                Step::Keep(Claim::Passed)
            }
            Some(r) => {
                let from_other = r.owner.as_deref().is_some_and(|owner| owner != me);
                if let Some(owner) = r.owner.as_deref()
                    && owner != me
                    && !self.lease_expired(o.id, owner, r.lease)
                {
                    return Step::Keep(Claim::Elsewhere);
                }
                let mut row = r.clone();
                row.owner = Some(me.clone());
                row.lease += 1;
                let taken = if from_other {
                    Claim::TakenOver
                } else {
                    Claim::Taken
                };
                Step::Write(row, taken)
            }
        })?;
        match outcome {
            Claim::Elsewhere => bump(&self.counts.held_elsewhere),
            Claim::TakenOver => bump(&self.counts.takeovers),
            _ => {}
        }
        if outcome != Claim::Elsewhere {
            self.seen().remove(o.id);
        }
        Ok(outcome)
    }

    /// Claims what it can of `objects` (the caller skips those in flight here). Objects
    /// another shipper holds are skipped; [`SharedLedger::held_elsewhere`] tells them.
    pub fn claim(
        &self,
        objects: &[Claimable<'_>],
        now: u32,
        honour: Honour,
    ) -> Result<Vec<Arc<str>>, LedgerError> {
        let mut claimed = Vec::new();
        for o in objects {
            match self.claim_one(o, now, honour) {
                Ok(Claim::Taken | Claim::TakenOver) => claimed.push(Arc::<str>::from(o.id)),
                Ok(_) => {}
                // All or nothing: the caller logs the error with its message or listing and
                // hands it back; what this call claimed is given up, to be found again.
                Err(e) => {
                    for id in &claimed {
                        let _ = self.let_go(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(claimed)
    }

    /// Whether the last claim of `id` found it held by another shipper's live lease.
    pub fn held_elsewhere(&self, id: &str) -> bool {
        self.seen().contains_key(id) && !self.held().contains_key(id)
    }
}
