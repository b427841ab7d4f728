//! This shipper's leases on the objects it holds: renewed by the commits and a renewal
//! every third of the lease time, let go one by one or all at a graceful stop.

use super::*;

impl SharedLedger {
    /// Gives up this shipper's lease on `id` without recording anything else: the next
    /// shipper claims it at once.
    pub fn let_go(&self, id: &str) -> Result<(), LedgerError> {
        // Not held here from now on, whether or not the write below lands: nothing here
        // works on it any more, so nothing may renew it, and a claim here may take it
        // again (a row that still names this shipper is retaken when not held).
        if self.held().remove(id).is_none() {
            return Ok(());
        }
        self.change(id, |row| match row {
            Some(r) if self.mine(r) => {
                let mut row = r.clone();
                row.owner = None;
                Step::Write(row, ())
            }
            _ => Step::Keep(()),
        })
    }

    /// Gives up every lease held (a graceful stop), after the last commit. Returns how
    /// many could not be given up (they expire by the lease time instead).
    pub fn let_go_all(&self) -> usize {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        let ids: Vec<String> = self.held().keys().cloned().collect();
        ids.iter().filter(|id| self.let_go(id).is_err()).count() + self.let_go_prefixes()
    }

    /// How often [`SharedLedger::renew`] is to be called: with leases renewed once they
    /// are a third of the lease time old, a lease is at most half the lease time old on
    /// the holder's clock, which leaves room for clocks that run at different rates.
    pub fn renew_every(&self) -> Duration {
        (self.lease_time / 6).max(Duration::from_millis(500))
    }

    /// Renews the leases last written more than a third of the lease time ago. Returns the
    /// objects whose lease another shipper took (this one was too slow to renew).
    pub fn renew(&self) -> Result<Vec<String>, LedgerError> {
        let now = (self.clock)();
        let third = self.lease_time / 3;
        let stale: Vec<String> = self
            .held()
            .iter()
            .filter(|(_, h)| now.saturating_sub(h.written) >= third)
            .map(|(id, _)| id.clone())
            .collect();
        let mut lost = Vec::new();
        let mut failed = self.beat(false).err();
        for id in stale {
            // Each on its own: one failed write must not leave the others unrenewed.
            // `Some(true)`: renewed; `Some(false)`: another shipper holds it now; `None`:
            // finished or let go here meanwhile (a commit between the list and the write).
            let kept = self.change(&id, |row| match row {
                Some(r) if self.mine(r) && !r.entry.is_finished() => {
                    let mut row = r.clone();
                    row.lease += 1;
                    Step::Write(row, Some(true))
                }
                Some(r) if r.owner.is_some() && !self.mine(r) => Step::Keep(Some(false)),
                _ => Step::Keep(None),
            });
            match kept {
                Ok(Some(true)) => {}
                Ok(Some(false)) => {
                    self.held().remove(&id);
                    bump(&self.counts.leases_lost);
                    lost.push(id);
                }
                Ok(None) => {
                    self.held().remove(&id);
                }
                Err(e) => failed = Some(e),
            }
        }
        // Leases seen elsewhere long ago: their objects were finished or taken over.
        let forget_before = now.saturating_sub(self.lease_time * 10);
        self.seen().retain(|_, s| s.since >= forget_before);
        match failed {
            Some(e) => Err(e),
            None => Ok(lost),
        }
    }

    /// Drops this run's leases without writing (a simulated crash in tests).
    pub fn forget_claims(&self) {
        self.held().clear();
    }
}
