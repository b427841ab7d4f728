//! Listing with a shared ledger: the bucket's account/kind/region prefixes split among the
//! shippers by lease, each prefix's watermark and forget line kept in its lease row, and the
//! keys known done kept here, so that an idle scan costs one LIST per prefix over all the
//! shippers together and reads no object rows.
//!
//! - Each shipper writes a heartbeat row whose version moves every third of the lease time.
//!   A prefix is its owner's while the owner's heartbeat moves, judged on this shipper's own
//!   clock as object leases are. Renewing every prefix row would cost a write per prefix per
//!   renewal (8,500 at an organization's size); a heartbeat costs one per shipper.
//! - Each scan reads every prefix row and heartbeat (two queries), takes free prefixes up to
//!   its share (the prefixes over the live shippers, rounded up), and takes what it still
//!   lacks from the shipper holding the most. A prefix two shippers list for a moment costs a
//!   LIST, never a repeat: every object is still claimed by a conditional write.
//! - Done rows under listed prefixes get no TTL when they finish. They are kept while a
//!   listing can still return their key (above the forget line), and the listing that raises
//!   a prefix's forget line marks the done rows below it to expire. A TTL counted from the
//!   finish would let a watermark held back longer than the lookback list keys whose rows
//!   had expired, and ship them again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::table::{LeaseKind, LeaseRow, Row, TableError};
use super::{MAX_TRIES, SharedLedger};
use crate::ledger::LedgerError;
use crate::ledger::entry::{Entry, Status};

/// A version of a row first seen at a time on this shipper's clock.
type Sighting = (u64, Duration);

/// What a shipper that lists keeps besides the object rules.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// `s3://BUCKET/`, the listed bucket's ids start so.
    bucket: String,
    /// The prefix rows as last read or written here.
    prefixes: Mutex<HashMap<String, LeaseRow>>,
    /// Ids known done under listed prefixes (done never goes back): a listing passes them
    /// without reading their rows. Pruned below each forget line, and when a prefix is lost.
    done: Mutex<BTreeSet<String>>,
    /// Prefixes whose rows in the listing window were read in one query since this shipper
    /// took them: after that, only keys new to it cost a read.
    warmed: Mutex<HashSet<String>>,
    /// Heartbeats seen, by owner.
    beats: Mutex<HashMap<String, Sighting>>,
    /// Prefixes seen without a live owner, by prefix: one left so for a lease time is taken
    /// whatever the share says (a shipper counted live that does not list).
    free: Mutex<HashMap<String, Sighting>>,
    /// This shipper's heartbeat as last written, and when.
    beat: Mutex<Option<(LeaseRow, Duration)>>,
    /// Set while the host has paused the input: no scan runs, so the heartbeat stops and
    /// the other shippers take this one's prefixes after the lease time.
    paused: std::sync::atomic::AtomicBool,
}

impl Listing {
    pub(super) fn of(bucket: &str) -> Self {
        Self {
            bucket: format!("s3://{bucket}/"),
            ..Self::default()
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The id of the CloudTrail region prefix a row's key lies under, if any: a listing
/// forgets those rows.
fn prefix_of(id: &str) -> Option<&str> {
    let (bucket, key) = id.strip_prefix("s3://")?.split_once('/')?;
    let prefix = crate::layout::region_prefix(key)?;
    Some(&id[..5 + bucket.len() + 1 + prefix.len()])
}

fn under_a_prefix(id: &str) -> bool {
    prefix_of(id).is_some()
}

/// The ids from `from` up to the end of the prefix.
fn prefix_end(prefix_id: &str) -> String {
    format!("{prefix_id}\u{10FFFF}")
}

impl SharedLedger {
    /// The Unix seconds at which a done row may be dropped: a lookback from now, or never
    /// (`None`) for a row a listing forgets by its forget line.
    pub(super) fn done_expires(&self, id: &str, now: u32) -> Option<u32> {
        // Only the listed bucket's rows: another bucket's (a notification from elsewhere, a
        // digest's) has no forget line to pass it.
        if self
            .listing
            .as_ref()
            .is_some_and(|l| id.starts_with(&l.bucket) && under_a_prefix(id))
        {
            None
        } else {
            Some(now.saturating_add(self.keep_done))
        }
    }

    /// Notes that `id` is done, when it lies under a prefix this shipper lists (only
    /// those are pruned by forget lines here).
    pub(super) fn remember_done(&self, id: &str) {
        if let Some(l) = &self.listing
            && prefix_of(id).is_some_and(|p| lock(&l.warmed).contains(p))
        {
            lock(&l.done).insert(id.to_string());
        }
    }

    /// The host paused (or resumed) the input: while paused this shipper lists nothing, so
    /// it stops its heartbeat and its prefixes move to the others after the lease time
    /// (they come back by the usual share once it beats again).
    pub fn set_paused(&self, paused: bool) {
        if let Some(l) = &self.listing {
            l.paused.store(paused, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether `id` is known done here (no read needed).
    pub fn known_done(&self, id: &str) -> bool {
        self.listing
            .as_ref()
            .is_some_and(|l| lock(&l.done).contains(id))
    }

    /// Whether a listed object keeps its prefix's watermark from passing it (see
    /// [`crate::ledger::entry::holds_watermark`]), reading its row only when not known done.
    pub fn holds_watermark(&self, id: &str) -> Result<bool, LedgerError> {
        if self.known_done(id) {
            return Ok(false);
        }
        Ok(crate::ledger::holds_watermark(self.entry(id)?.as_ref()))
    }

    /// Writes this shipper's heartbeat when the last one is a third of the lease time old
    /// (or at once with `force`). Only this shipper writes its row: a conflict means a
    /// write landed although its answer was lost, so the row is read and written again.
    pub(super) fn beat(&self, force: bool) -> Result<(), LedgerError> {
        let Some(l) = &self.listing else {
            return Ok(());
        };
        if l.paused.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let now = (self.clock)();
        let mut beat = lock(&l.beat);
        if let Some((_, at)) = &*beat
            && !force
            && now.saturating_sub(*at) < self.lease_time / 3
        {
            return Ok(());
        }
        let mut expected = beat.as_ref().map(|(r, _)| r.version);
        // Dropped by the store a day after the last beat (a crashed shipper's row).
        let expires = crate::timestamp::EventTime::now()
            .secs()
            .saturating_add(86_400);
        for _ in 0..2 {
            let row = LeaseRow {
                version: expected.map_or(1, |v| v + 1),
                owner: Some(self.me.clone()),
                expires: Some(expires),
                ..LeaseRow::default()
            };
            super::counts::bump(&self.counts.writes);
            let put = self
                .table
                .put_lease(LeaseKind::Shipper, &self.me, expected, &row);
            if put.map_err(|e| self.err(e))? {
                *beat = Some((row, now));
                return Ok(());
            }
            expected = self
                .table
                .get_lease(LeaseKind::Shipper, &self.me)
                .map_err(|e| self.err(e))?
                .map(|r| r.version);
        }
        Err(self.err(TableError(format!(
            "the heartbeat of {}: written by another writer",
            self.me
        ))))
    }

    /// The shippers alive by their heartbeats (this one included): a heartbeat is alive
    /// until its version stood still for the lease time on this shipper's clock, and gone
    /// at once when its shipper stopped gracefully (no owner).
    fn live(&self, l: &Listing, beats: &[(String, LeaseRow)]) -> HashSet<String> {
        let now = (self.clock)();
        let mut seen = lock(&l.beats);
        let mut live = HashSet::from([self.me.clone()]);
        for (id, r) in beats {
            if r.owner.is_none() {
                continue;
            }
            match seen.get(id) {
                Some((v, since)) if *v == r.version => {
                    if now.saturating_sub(*since) < self.lease_time {
                        live.insert(id.clone());
                    }
                }
                _ => {
                    seen.insert(id.clone(), (r.version, now));
                    live.insert(id.clone());
                }
            }
        }
        seen.retain(|id, _| beats.iter().any(|(b, _)| b == id));
        live
    }

    /// Whether a prefix without a live owner has stood so (same row version) for the lease
    /// time here.
    fn free_too_long(&self, l: &Listing, id: &str, version: u64) -> bool {
        let now = (self.clock)();
        let mut free = lock(&l.free);
        match free.get(id) {
            Some((v, since)) if *v == version => now.saturating_sub(*since) >= self.lease_time,
            _ => {
                free.insert(id.to_string(), (version, now));
                false
            }
        }
    }

    /// The prefixes (ids) this shipper lists now: of those its enumeration found (`known`)
    /// and those the table names that `keep` accepts, the ones it holds, after taking free
    /// ones up to its share and, when still short, one at a time from the shipper holding
    /// the most (while it holds two more than this one). Without listing, `known` as it is.
    pub fn share_prefixes(
        &self,
        known: &[String],
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, LedgerError> {
        let Some(l) = &self.listing else {
            return Ok(known.to_vec());
        };
        self.beat(false)?;
        bump_queries(self, 2);
        let rows: HashMap<String, LeaseRow> = self
            .table
            .leases(LeaseKind::Prefix)
            .map_err(|e| self.err(e))?
            .into_iter()
            .collect();
        let beats = self
            .table
            .leases(LeaseKind::Shipper)
            .map_err(|e| self.err(e))?;
        let live = self.live(l, &beats);
        *lock(&l.prefixes) = rows.clone();

        let all: BTreeSet<&str> = known
            .iter()
            .map(String::as_str)
            .chain(rows.keys().map(String::as_str).filter(|id| keep(id)))
            .collect();
        let mut mine = Vec::new();
        let mut load: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut free = Vec::new();
        for id in &all {
            let owner = rows.get(*id).and_then(|r| r.owner.as_deref());
            match owner {
                Some(o) if o == self.me => mine.push(id.to_string()),
                Some(o) if live.contains(o) => load.entry(o).or_default().push(id),
                _ => free.push((*id, owner)),
            }
        }
        let share = all.len().div_ceil(live.len());
        // Each shipper tries the free prefixes in an order of its own, so shippers that
        // start together do not all race for the same first one.
        free.sort_by_key(|(id, _)| spread(&self.me, id));
        for (id, owner) in free {
            let version = rows.get(id).map_or(0, |r| r.version);
            if mine.len() >= share && !self.free_too_long(l, id, version) {
                continue;
            }
            if self.take_prefix(id, owner)? {
                lock(&l.free).remove(id);
                mine.push(id.to_string());
            }
        }
        // From a shipper holding two more than this one at least: after the move it still
        // holds as many as this one, so it never takes the prefix back, and the shares end
        // within one of each other.
        while mine.len() < share {
            let Some((victim, ids)) = load
                .iter_mut()
                .filter(|(_, ids)| ids.len() > mine.len() + 1)
                .max_by_key(|(o, ids)| (ids.len(), **o))
            else {
                break;
            };
            let victim = *victim;
            let Some(id) = ids.pop() else { break };
            if !self.take_prefix(id, Some(victim))? {
                break;
            }
            mine.push(id.to_string());
        }
        mine.sort();
        self.forget_lost(l, &mine);
        Ok(mine)
    }

    /// Drops what this shipper kept of prefixes it no longer lists.
    fn forget_lost(&self, l: &Listing, mine: &[String]) {
        let mut warmed = lock(&l.warmed);
        let lost: Vec<String> = warmed
            .iter()
            .filter(|p| mine.binary_search(p).is_err())
            .cloned()
            .collect();
        let mut done = lock(&l.done);
        for p in lost {
            warmed.remove(&p);
            let end = prefix_end(&p);
            let ids: Vec<String> = done.range(p.clone()..end).cloned().collect();
            for id in ids {
                done.remove(&id);
            }
        }
    }

    /// Takes the prefix `id` if its row still names `from` (`None`: no owner) or already
    /// this shipper. Returns whether this shipper holds it now.
    fn take_prefix(&self, id: &str, from: Option<&str>) -> Result<bool, LedgerError> {
        let Some(l) = &self.listing else {
            return Ok(false);
        };
        let mut current = lock(&l.prefixes).get(id).cloned();
        for _ in 0..MAX_TRIES {
            let owner = current.as_ref().and_then(|r| r.owner.as_deref());
            if owner == Some(self.me.as_str()) {
                return Ok(true);
            }
            if owner != from {
                return Ok(false);
            }
            let mut row = current.clone().unwrap_or_default();
            let expected = current.as_ref().map(|r| r.version);
            row.version = expected.map_or(1, |v| v + 1);
            row.owner = Some(self.me.clone());
            super::counts::bump(&self.counts.writes);
            let put = self.table.put_lease(LeaseKind::Prefix, id, expected, &row);
            if put.map_err(|e| self.err(e))? {
                lock(&l.prefixes).insert(id.to_string(), row);
                super::counts::bump(&self.counts.prefixes_taken);
                return Ok(true);
            }
            super::counts::bump(&self.counts.conflicts);
            current = self.read_prefix(id)?;
        }
        Ok(false)
    }

    fn read_prefix(&self, id: &str) -> Result<Option<LeaseRow>, LedgerError> {
        super::counts::bump(&self.counts.reads);
        let row = self
            .table
            .get_lease(LeaseKind::Prefix, id)
            .map_err(|e| self.err(e))?;
        if let (Some(l), Some(r)) = (&self.listing, &row) {
            lock(&l.prefixes).insert(id.to_string(), r.clone());
        }
        Ok(row)
    }

    /// The watermark and forget line of a listed prefix, as last read here (read when
    /// never seen).
    pub fn prefix_marks(&self, id: &str) -> Result<(Option<String>, Option<String>), LedgerError> {
        let Some(l) = &self.listing else {
            return Ok((None, None));
        };
        let cached = lock(&l.prefixes).get(id).cloned();
        let row = match cached {
            Some(r) => Some(r),
            None => self.read_prefix(id)?,
        };
        Ok(row.map_or((None, None), |r| (r.watermark, r.floor)))
    }

    /// Every prefix row's watermark, read now.
    pub fn watermarks(&self) -> Result<Vec<(String, String)>, LedgerError> {
        bump_queries(self, 1);
        let rows = self
            .table
            .leases(LeaseKind::Prefix)
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, r)| Some((id, r.watermark?)))
            .collect())
    }

    /// Raises a prefix's watermark to `to` and its forget line to `forget_below` (never
    /// lowers either), then, when the forget line rose, marks the done rows below it to
    /// expire: no listing returns their keys again.
    pub fn advance_prefix(
        &self,
        id: &str,
        to: &str,
        forget_below: &str,
        now: u32,
    ) -> Result<(), LedgerError> {
        let Some(l) = &self.listing else {
            return Ok(());
        };
        let mut current = lock(&l.prefixes).get(id).cloned();
        for _ in 0..MAX_TRIES {
            let mut row = current.clone().unwrap_or_default();
            let raise_mark = row.watermark.as_deref().is_none_or(|w| w < to);
            let raise_floor =
                forget_below > id && row.floor.as_deref().is_none_or(|f| f < forget_below);
            if !raise_mark && !raise_floor {
                return Ok(());
            }
            if raise_mark {
                row.watermark = Some(to.to_string());
            }
            if raise_floor {
                row.floor = Some(forget_below.to_string());
            }
            let expected = current.as_ref().map(|r| r.version);
            row.version = expected.map_or(1, |v| v + 1);
            super::counts::bump(&self.counts.writes);
            let put = self.table.put_lease(LeaseKind::Prefix, id, expected, &row);
            if put.map_err(|e| self.err(e))? {
                lock(&l.prefixes).insert(id.to_string(), row);
                if raise_floor {
                    self.forget_below(l, id, forget_below, now)?;
                }
                return Ok(());
            }
            super::counts::bump(&self.counts.conflicts);
            current = self.read_prefix(id)?;
        }
        Err(self.err(TableError(format!(
            "{id}: {MAX_TRIES} conflicting writes in a row"
        ))))
    }

    /// Marks the done rows of a prefix below its forget line to expire now, and drops them
    /// from what is known done here. A row changed meanwhile is left for the next forget
    /// line (every pass reads all rows below the line).
    fn forget_below(
        &self,
        l: &Listing,
        id: &str,
        below: &str,
        now: u32,
    ) -> Result<(), LedgerError> {
        bump_queries(self, 1);
        let rows = self
            .table
            .rows_under(id, id, Some(below))
            .map_err(|e| self.err(e))?;
        for (rid, r) in rows {
            if r.entry.status != Status::Done || r.expires.is_some() {
                continue;
            }
            // A day from now, not at once: a shipper listing the prefix from a forget line
            // it read before this one rose (the prefix moving between shippers) still
            // finds the row, and passes the key instead of shipping it again.
            let row = Row {
                version: r.version + 1,
                expires: Some(now.saturating_add(86_400)),
                ..r.clone()
            };
            super::counts::bump(&self.counts.writes);
            self.table
                .put(&rid, Some(r.version), &row)
                .map_err(|e| self.err(e))?;
        }
        let mut done = lock(&l.done);
        let ids: Vec<String> = done
            .range(id.to_string()..below.to_string())
            .cloned()
            .collect();
        for i in ids {
            done.remove(&i);
        }
        Ok(())
    }

    /// Before a prefix's first listing here: reads its rows from the listing's start in one
    /// query and notes the done ones, so the listing reads no row of a key it saw done.
    pub fn warm(&self, prefix_id: &str, from_id: &str) -> Result<(), LedgerError> {
        let Some(l) = &self.listing else {
            return Ok(());
        };
        if lock(&l.warmed).contains(prefix_id) {
            return Ok(());
        }
        bump_queries(self, 1);
        let rows = self
            .table
            .rows_under(prefix_id, from_id, None)
            .map_err(|e| self.err(e))?;
        lock(&l.done).extend(
            rows.into_iter()
                .filter(|(_, r)| r.entry.status == Status::Done)
                .map(|(id, _)| id),
        );
        lock(&l.warmed).insert(prefix_id.to_string());
        Ok(())
    }

    /// At a graceful stop: gives up this shipper's prefixes and marks its heartbeat
    /// stopped, so the others take the prefixes at their next scan. Returns how many
    /// writes failed (those prefixes move after the lease time instead).
    pub(super) fn let_go_prefixes(&self) -> usize {
        let Some(l) = &self.listing else {
            return 0;
        };
        let mine: Vec<(String, LeaseRow)> = lock(&l.prefixes)
            .iter()
            .filter(|(_, r)| r.owner.as_deref() == Some(self.me.as_str()))
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        let mut failed = 0;
        for (id, r) in mine {
            let row = LeaseRow {
                version: r.version + 1,
                owner: None,
                ..r.clone()
            };
            super::counts::bump(&self.counts.writes);
            // A conflict means another shipper took it already: nothing to give up.
            if self
                .table
                .put_lease(LeaseKind::Prefix, &id, Some(r.version), &row)
                .is_err()
            {
                failed += 1;
            }
        }
        let beat = lock(&l.beat).clone();
        if let Some((r, _)) = beat {
            let row = LeaseRow {
                version: r.version + 1,
                owner: None,
                ..r
            };
            super::counts::bump(&self.counts.writes);
            if self
                .table
                .put_lease(LeaseKind::Shipper, &self.me, Some(row.version - 1), &row)
                .is_err()
            {
                failed += 1;
            }
        }
        failed
    }
}

/// Whether the entry's status is done (for a done entry read here).
pub(super) fn is_done(e: &Entry) -> bool {
    e.status == Status::Done
}

fn bump_queries(l: &SharedLedger, n: u64) {
    l.counts
        .queries
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// A stable order of prefixes of this shipper's own.
fn spread(me: &str, id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    me.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}
