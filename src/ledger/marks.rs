//! Where listings stand: the low watermark and forget line of each listed prefix, and the
//! time windows (watermark, forget line, time index) of flat listings, folders and SQS.

use std::collections::HashSet;

use redb::ReadableTable;

use super::{Entry, FLOORS, Ledger, LedgerError, OBJECTS, Status, TIMED, TIMES, WATERMARKS};

impl Ledger {
    /// The low watermark of a listed prefix.
    pub fn watermark(&self, prefix_id: &str) -> Result<Option<String>, LedgerError> {
        if let Some(sh) = &self.shared {
            return Ok(sh.prefix_marks(prefix_id)?.0);
        }
        self.read(|txn| {
            let t = txn.open_table(WATERMARKS)?;
            Ok(t.get(prefix_id)?.map(|v| v.value().to_string()))
        })
    }

    /// Every watermark, by prefix id.
    pub fn watermarks(&self) -> Result<Vec<(String, String)>, LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.watermarks();
        }
        self.read(|txn| {
            let t = txn.open_table(WATERMARKS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value().to_string()));
            }
            Ok(out)
        })
    }

    /// Moves a prefix's watermark forward (never back) and forgets the finished entries
    /// below `forget_below` under the prefix: no listing returns them again. Failed and
    /// open entries are kept.
    pub fn advance(
        &self,
        prefix_id: &str,
        to: &str,
        forget_below: &str,
    ) -> Result<(), LedgerError> {
        let now = crate::timestamp::EventTime::now().secs();
        self.advance_at(prefix_id, to, forget_below, now)
    }

    /// [`Ledger::advance`] at `now`. In hybrid mode ([`Ledger::keep_for_notifications`])
    /// the done entries below the new forget line are not deleted but forgotten with the
    /// `sqs` time group, a lookback after `now`.
    pub fn advance_at(
        &self,
        prefix_id: &str,
        to: &str,
        forget_below: &str,
        now: u32,
    ) -> Result<(), LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.advance_prefix(prefix_id, to, forget_below, now);
        }
        let notified = self.notified.load(std::sync::atomic::Ordering::Relaxed);
        self.write(|txn| {
            let mut marks = txn.open_table(WATERMARKS)?;
            let current = marks.get(prefix_id)?.map(|v| v.value().to_string());
            if current.as_deref().is_none_or(|c| c < to) {
                marks.insert(prefix_id, to)?;
            }
            if forget_below > prefix_id {
                let mut table = txn.open_table(OBJECTS)?;
                if notified {
                    let mut times = txn.open_table(TIMES)?;
                    let mut timed = txn.open_table(TIMED)?;
                    // Below the old line, every done entry was given its time already.
                    let old_line = txn
                        .open_table(FLOORS)?
                        .get(prefix_id)?
                        .map(|v| v.value().to_string());
                    let from = old_line
                        .filter(|l| l.as_str() > prefix_id)
                        .unwrap_or_else(|| prefix_id.to_string());
                    let mut done = Vec::new();
                    if from.as_str() < forget_below {
                        for row in table.range(from.as_str()..forget_below)? {
                            let (k, v) = row?;
                            if Entry::decode(v.value()).is_some_and(|e| e.status == Status::Done) {
                                done.push(k.value().to_string());
                            }
                        }
                    }
                    for id in done {
                        if timed.get(id.as_str())?.is_none() {
                            let key = time_key("sqs", now, &id);
                            times.insert(key.as_str(), ())?;
                            timed.insert(id.as_str(), key.as_str())?;
                        }
                    }
                } else {
                    table.retain_in(prefix_id..forget_below, |_, v| {
                        Entry::decode(v).is_none_or(|e| e.status != Status::Done)
                    })?;
                }
                let mut floors = txn.open_table(FLOORS)?;
                let floor = floors.get(prefix_id)?.map(|v| v.value().to_string());
                if floor.as_deref().is_none_or(|f| f < forget_below) {
                    floors.insert(prefix_id, forget_below)?;
                }
            }
            Ok(())
        })
    }

    /// The prefixes (ids) this shipper lists now, of `known` and, with a shared ledger,
    /// those the table names that `keep` accepts: with a shared ledger, its share of them
    /// (see `shared::prefixes`); alone, all of `known`.
    pub fn share_prefixes(
        &self,
        known: &[String],
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, LedgerError> {
        match &self.shared {
            Some(sh) => sh.share_prefixes(known, keep),
            None => Ok(known.to_vec()),
        }
    }

    /// Before listing a prefix from `from_id`: a shared ledger reads the rows there in one
    /// query the first time, so that the listing reads no row of a key known done.
    pub fn prepare_listing(&self, prefix_id: &str, from_id: &str) -> Result<(), LedgerError> {
        match &self.shared {
            Some(sh) => sh.warm(prefix_id, from_id),
            None => Ok(()),
        }
    }

    /// For each listed object, whether it keeps its watermark from passing it
    /// ([`super::holds_watermark`]).
    pub fn holding_watermark(&self, ids: &[&str]) -> Result<Vec<bool>, LedgerError> {
        if let Some(sh) = &self.shared {
            return ids.iter().map(|id| sh.holds_watermark(id)).collect();
        }
        Ok(self
            .entries(ids)?
            .iter()
            .map(|e| super::holds_watermark(e.as_ref()))
            .collect())
    }

    /// The forget line of a listed prefix: an id below which listings never start.
    pub fn floor(&self, prefix_id: &str) -> Result<Option<String>, LedgerError> {
        if let Some(sh) = &self.shared {
            return Ok(sh.prefix_marks(prefix_id)?.1);
        }
        self.read(|txn| {
            let t = txn.open_table(FLOORS)?;
            Ok(t.get(prefix_id)?.map(|v| v.value().to_string()))
        })
    }

    /// The forget line of a time group: listings skip objects that landed before it.
    pub fn time_floor(&self, group: &str) -> Result<Option<u32>, LedgerError> {
        self.read(|txn| {
            let t = txn.open_table(FLOORS)?;
            Ok(t.get(time_mark(group).as_str())?
                .and_then(|v| v.value().parse().ok()))
        })
    }

    /// The time watermark of a group (flat listings, folders): every wanted object modified
    /// at or before it is finished.
    pub fn time_watermark(&self, group: &str) -> Result<Option<u32>, LedgerError> {
        self.watermark(&time_mark(group))
            .map(|w| w.and_then(|s| s.parse().ok()))
    }

    /// Moves a group's time watermark forward (never back).
    pub fn advance_time(&self, group: &str, to: u32) -> Result<(), LedgerError> {
        let key = time_mark(group);
        self.write(|txn| {
            let mut marks = txn.open_table(WATERMARKS)?;
            let current = marks
                .get(key.as_str())?
                .and_then(|v| v.value().parse::<u32>().ok());
            if current.is_none_or(|c| c < to) {
                marks.insert(key.as_str(), format!("{to:010}").as_str())?;
            }
            Ok(())
        })
    }

    /// The time group an entry is forgotten with, and its time, if it has one.
    pub fn time_group(&self, id: &str) -> Result<Option<(String, u32)>, LedgerError> {
        self.read(|txn| {
            let timed = txn.open_table(TIMED)?;
            let Some(key) = timed.get(id)?.map(|v| v.value().to_string()) else {
                return Ok(None);
            };
            let mut parts = key.splitn(3, '\0');
            let group = parts.next().unwrap_or_default().to_string();
            let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            Ok(Some((group, secs)))
        })
    }

    /// Forgets the done entries of a time group whose time is before `before`, and raises
    /// the group's forget line to it.
    pub fn forget_older(&self, group: &str, before: u32) -> Result<usize, LedgerError> {
        self.write(|txn| {
            let mut floors = txn.open_table(FLOORS)?;
            let key = time_mark(group);
            let floor = floors
                .get(key.as_str())?
                .and_then(|v| v.value().parse::<u32>().ok());
            if floor.is_none_or(|f| f < before) {
                floors.insert(key.as_str(), format!("{before:010}").as_str())?;
            }
            drop(floors);
            let mut times = txn.open_table(TIMES)?;
            let mut timed = txn.open_table(TIMED)?;
            let mut table = txn.open_table(OBJECTS)?;
            let lo = format!("{group}\0");
            let hi = time_key(group, before, "");
            let mut stale = Vec::new();
            for row in times.range(lo.as_str()..hi.as_str())? {
                let (k, _) = row?;
                stale.push(k.value().to_string());
            }
            let mut n = 0;
            for k in stale {
                let id = k.rsplit_once('\0').map_or("", |(_, id)| id);
                let done = table
                    .get(id)?
                    .and_then(|v| Entry::decode(v.value()))
                    .is_none_or(|e| e.status == Status::Done);
                if done {
                    table.remove(id)?;
                    times.remove(k.as_str())?;
                    timed.remove(id)?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// Forgets the done entries whose id starts with `id_prefix` and is not in `present`
    /// (a folder's files that are gone). Returns how many.
    pub fn forget_done_absent(
        &self,
        id_prefix: &str,
        present: &HashSet<&str>,
    ) -> Result<usize, LedgerError> {
        self.write_lazy(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut gone = Vec::new();
            for row in table.range(id_prefix..)? {
                let (k, v) = row?;
                let id = k.value();
                if !id.starts_with(id_prefix) {
                    break;
                }
                let done = Entry::decode(v.value()).is_some_and(|e| e.status == Status::Done);
                if done && !present.contains(id) {
                    gone.push(id.to_string());
                }
            }
            for id in &gone {
                table.remove(id.as_str())?;
            }
            Ok(gone.len())
        })
    }
}

/// The watermark row of a time group (not an object id: those start `s3://` or `dir:`).
pub(super) fn time_mark(group: &str) -> String {
    format!("time:{group}")
}

/// The key of a time-index row.
pub(super) fn time_key(group: &str, secs: u32, id: &str) -> String {
    format!("{group}\0{secs:010}\0{id}")
}

/// Whether `id` lies below the forget line of the listed prefix it is under. Region
/// prefixes do not nest, so the prefix an id is under is the last forget line key at or
/// before it.
pub(super) fn below_forget_line(
    floors: &redb::Table<'_, &str, &str>,
    id: &str,
) -> Result<bool, redb::StorageError> {
    let Some(row) = floors.range(..=id)?.next_back() else {
        return Ok(false);
    };
    let (prefix, line) = row?;
    Ok(id.starts_with(prefix.value()) && id < line.value())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{claim, mark};
    use super::*;
    use crate::ledger::mark::End;
    use crate::ledger::{Backoff, Claimable, Honour};

    #[test]
    fn watermarks_only_move_forward_and_forget_done_entries_below() {
        let l = Ledger::open(None, None, 0).unwrap();
        let p = "s3://b/AWSLogs/1/CloudTrail/r/";
        let k = |d: &str| format!("{p}2023/07/{d}/x.json.gz");
        claim(&l, &[&k("08"), &k("09"), &k("10")], 1);
        l.commit(
            &[
                mark(&k("08"), 1, 1, Some(End::Done)),
                mark(&k("09"), 1, 1, Some(End::Failed("bad".into()))),
            ],
            2,
            Backoff::TRANSIENT,
        )
        .unwrap();
        l.advance(p, &k("09"), &format!("{p}2023/07/10")).unwrap();
        l.advance(p, &k("08"), p).unwrap();
        assert_eq!(l.watermark(p).unwrap().as_deref(), Some(k("09").as_str()));
        assert!(
            l.entry(&k("08")).unwrap().is_none(),
            "done and below: forgotten"
        );
        assert!(l.is_finished(&k("09")), "failed entries are kept");
        assert!(
            l.entry(&k("10")).unwrap().is_some(),
            "open entries are kept"
        );
    }

    #[test]
    fn an_entry_done_below_the_forget_line_is_forgotten_at_once() {
        // A retry from the ledger that ends after the watermark passed the object: no
        // listing returns it again, so its done entry is not kept.
        let l = Ledger::open(None, None, 0).unwrap();
        let p = "s3://b/AWSLogs/1/CloudTrail/r/";
        let other = "s3://b/AWSLogs/2/CloudTrail/r/";
        let k = |d: &str| format!("{p}2023/07/{d}/x.json.gz");
        let elsewhere = format!("{other}2023/07/01/x.json.gz");
        claim(&l, &[&k("01"), &k("10"), &elsewhere], 1);
        l.advance(p, &k("10"), &format!("{p}2023/07/09")).unwrap();
        l.commit(
            &[
                mark(&k("01"), 1, 1, Some(End::Done)),
                mark(&k("10"), 1, 1, Some(End::Done)),
                mark(&elsewhere, 1, 1, Some(End::Done)),
            ],
            2,
            Backoff::TRANSIENT,
        )
        .unwrap();
        assert!(l.entry(&k("01")).unwrap().is_none(), "below the line");
        assert!(l.is_finished(&k("10")), "above the line: kept");
        assert!(
            l.is_finished(&elsewhere),
            "another prefix's line does not apply"
        );
    }

    #[test]
    fn time_groups_forget_only_old_done_entries() {
        let l = Ledger::open(None, None, 0).unwrap();
        let objs = [
            Claimable {
                id: "s3://b/old",
                size: 1,
                modified: (0, 0),
                forget_by: Some(("sqs", 100)),
            },
            Claimable {
                id: "s3://b/new",
                size: 1,
                modified: (0, 0),
                forget_by: Some(("sqs", 300)),
            },
            Claimable {
                id: "s3://b/open",
                size: 1,
                modified: (0, 0),
                forget_by: Some(("sqs", 100)),
            },
        ];
        l.claim(&objs, 1, Honour::Backoff).unwrap();
        // Each is forgotten by when it finished, not by when it was claimed.
        let done = |id: &str, now| {
            l.commit(&[mark(id, 1, 1, Some(End::Done))], now, Backoff::TRANSIENT)
                .unwrap()
        };
        done("s3://b/old", 150);
        done("s3://b/new", 250);
        assert_eq!(
            l.time_group("s3://b/new").unwrap(),
            Some(("sqs".into(), 250))
        );
        assert_eq!(l.forget_older("sqs", 200).unwrap(), 1);
        assert!(l.entry("s3://b/old").unwrap().is_none());
        assert!(l.is_finished("s3://b/new"));
        assert!(l.entry("s3://b/open").unwrap().is_some());
        assert_eq!(l.time_group("s3://b/old").unwrap(), None);
    }

    #[test]
    fn an_object_read_longer_than_the_lookback_is_remembered_from_its_finish() {
        // Claimed at 100, finished at 1,000: with a lookback of 500, a forget at 900 (by
        // the claim time it would go) keeps it; one at 1,600 forgets it.
        let l = Ledger::open(None, None, 0).unwrap();
        let long = Claimable {
            id: "s3://b/long",
            size: 1,
            modified: (0, 0),
            forget_by: Some(("sqs", 100)),
        };
        l.claim(&[long], 100, Honour::Backoff).unwrap();
        l.commit(
            &[mark("s3://b/long", 1, 1, Some(End::Done))],
            1_000,
            Backoff::TRANSIENT,
        )
        .unwrap();
        assert_eq!(l.forget_older("sqs", 900 - 500).unwrap(), 0);
        assert!(l.is_finished("s3://b/long"));
        assert_eq!(l.forget_older("sqs", 1_600 - 500).unwrap(), 1);
        assert!(l.entry("s3://b/long").unwrap().is_none());
    }

    #[test]
    fn in_hybrid_mode_entries_behind_the_forget_line_are_forgotten_by_time() {
        // A notification may name a key again after the listing's forget line passed it
        // (a message handed back at a stop): its done entry must still be there.
        let l = Ledger::open(None, None, 0).unwrap();
        l.keep_for_notifications();
        let p = "s3://b/AWSLogs/1/CloudTrail/r/";
        let k = |d: &str| format!("{p}2023/07/{d}/x.json.gz");
        claim(&l, &[&k("01"), &k("08"), &k("10")], 1);
        l.commit(
            &[mark(&k("08"), 1, 1, Some(End::Done))],
            2,
            Backoff::TRANSIENT,
        )
        .unwrap();
        // The line passes 08 (done): kept, forgotten with the sqs group from now.
        l.advance_at(p, &k("10"), &format!("{p}2023/07/09"), 50)
            .unwrap();
        assert!(l.is_finished(&k("08")));
        assert_eq!(l.time_group(&k("08")).unwrap(), Some(("sqs".into(), 50)));
        // 01 finishes below the line (a late object): kept too, from its finish.
        l.commit(
            &[mark(&k("01"), 1, 1, Some(End::Done))],
            60,
            Backoff::TRANSIENT,
        )
        .unwrap();
        assert!(l.is_finished(&k("01")));
        assert_eq!(l.time_group(&k("01")).unwrap(), Some(("sqs".into(), 60)));
        assert_eq!(l.forget_older("sqs", 55).unwrap(), 1);
        assert!(l.entry(&k("08")).unwrap().is_none());
        assert_eq!(l.forget_older("sqs", 61).unwrap(), 1);
        assert!(l.entry(&k("01")).unwrap().is_none());
        assert!(l.entry(&k("10")).unwrap().is_some(), "open: kept");
    }
}
