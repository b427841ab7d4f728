//! The local ledger's commit: what the host now has, applied to each object's entry in one
//! durable write, with the forgetting rules that apply at the finish.

use super::mark::Mark;
use super::marks::{below_forget_line, time_key};
use super::{
    Backoff, Committed, Entry, FLOORS, Ledger, LedgerError, OBJECTS, OPEN, Status, TIMED, TIMES,
};
use redb::ReadableTable;

impl Ledger {
    pub(super) fn commit_local(
        &self,
        marks: &[Mark],
        now: u32,
        abandoned: Backoff,
        out: &mut Committed,
    ) -> Result<(), LedgerError> {
        self.write(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut open = txn.open_table(OPEN)?;
            let floors = txn.open_table(FLOORS)?;
            let mut timed = txn.open_table(TIMED)?;
            let mut times = txn.open_table(TIMES)?;
            let notified = self.notified.load(std::sync::atomic::Ordering::Relaxed);
            for m in marks {
                out.events += m.events;
                let mut e = table
                    .get(&*m.id)?
                    .and_then(|v| Entry::decode(v.value()))
                    .unwrap_or_else(|| Entry::open(0, (0, 0), now));
                if e.is_finished() {
                    continue;
                }
                match e.apply(m, now, abandoned) {
                    Some(Status::Done) => out.done += 1,
                    Some(Status::Failed) => out.failed += 1,
                    _ => {}
                }
                if e.is_finished() {
                    open.remove(&*m.id)?;
                }
                // An object found through SQS is forgotten a lookback after it finished, not
                // after its claim: one read for longer than the lookback (retried, denied a
                // while) is still known when a notification of it comes again. (Flat
                // listings' groups keep their landing times: their listings skip by those.)
                if e.status == Status::Done {
                    let old = timed.get(&*m.id)?.map(|v| v.value().to_string());
                    if let Some(old) = old
                        && let Some(("sqs", _)) = old.split_once('\0')
                    {
                        let key = time_key("sqs", now, &m.id);
                        times.remove(old.as_str())?;
                        times.insert(key.as_str(), ())?;
                        timed.insert(&*m.id, key.as_str())?;
                    }
                }
                // Done below its prefix's forget line (a retry from the ledger that ended
                // after the watermark had passed it, or a late object shipped from its
                // notification): no listing returns it again, so it is forgotten now, as the
                // watermark forgot its neighbours. One forgotten by time is kept for its time
                // group to forget; in hybrid mode, it is given one.
                if e.status == Status::Done
                    && below_forget_line(&floors, &m.id)?
                    && timed.get(&*m.id)?.is_none()
                {
                    if !notified {
                        table.remove(&*m.id)?;
                        continue;
                    }
                    let key = time_key("sqs", now, &m.id);
                    times.insert(key.as_str(), ())?;
                    timed.insert(&*m.id, key.as_str())?;
                }
                table.insert(&*m.id, e.encode().as_slice())?;
            }
            Ok(())
        })
    }
}
