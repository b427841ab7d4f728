//! Scanning a bucket: the CloudTrail layout by region and day with a low watermark per
//! region prefix, or any other expression as one flat listing with a time watermark.
//!
//! The promises this keeps are in `docs/delivery.md`. In short: a region's watermark is a
//! key such that every wanted key up to it is finished; it moves forward only over finished
//! keys, never past the day after today, and each scan lists from `lookback` before its day.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use futures_util::{StreamExt, stream};

use crate::discover::listing::{Clock, Listed, Lister};
use crate::discover::{DIGEST_DIR, DiscoverError, Sink, window};
use crate::layout::{self, Base, SEARCH_DEPTH, day_path, is_account, key_day};
use crate::ledger::{Claimable, Honour, Ledger};
use crate::log::Logger;
use crate::object::{ObjectRef, s3_id};
use crate::pathexpr::PathExpression;
use crate::select::Selection;
use crate::timestamp::EventTime;

/// Accounts and regions are enumerated again at the first scan this many seconds after the
/// last enumeration (and at start): an idle scan then costs one LIST per region prefix, not
/// one per account and prefix as well. A new account or region is found within this time
/// (at once through SQS, in hybrid mode).
pub const ENUMERATE_EVERY_SECS: u32 = 600;

mod claims;
pub use claims::{CLAIMS_PER_PREFIX_MIN, CLAIMS_PER_SCAN, ClaimLimit, ScanOutcome};

/// Scans one bucket.
pub struct BucketScan<L, C> {
    pub lister: L,
    pub clock: C,
    /// `path_expression` over the chosen kinds' folders.
    pub select: Selection,
    /// Objects that landed before this are not shipped (`start_time`).
    pub start: EventTime,
    /// Seconds behind the watermark that late objects are still found.
    pub lookback: u32,
    pub log: Logger,
    /// Region prefixes from the last enumeration (and from the ledger's watermarks).
    regions: BTreeSet<String>,
    /// The keys each prefix's last listing left past its claim limit (prefixes with none
    /// are not here). A prefix whose listing fails keeps its count, so one failed LIST
    /// does not make a backfill look finished.
    left: std::collections::BTreeMap<String, usize>,
    /// When accounts and regions were last enumerated (Unix seconds); `None` before the
    /// first time.
    enumerated_at: Option<u32>,
    /// Listings in flight at once: region prefixes during a scan, accounts during an
    /// enumeration. Each LIST is a round trip to S3; one at a time, a scan of an
    /// organization's thousands of prefixes takes minutes.
    concurrency: NonZeroUsize,
    claim_limit: ClaimLimit,
}

impl<L: Lister, C: Clock> BucketScan<L, C> {
    pub fn new(
        lister: L,
        clock: C,
        select: Selection,
        start: EventTime,
        lookback: u32,
        log: Logger,
    ) -> Self {
        Self {
            lister,
            clock,
            select,
            start,
            lookback,
            log,
            regions: BTreeSet::new(),
            left: std::collections::BTreeMap::new(),
            enumerated_at: None,
            concurrency: NonZeroUsize::MIN,
            claim_limit: ClaimLimit::default(),
        }
    }

    /// Claims at most `limit` objects in each prefix a scan.
    pub fn with_claim_limit(mut self, limit: ClaimLimit) -> Self {
        self.claim_limit = limit;
        self
    }

    /// Lists up to `n` prefixes at once (one when `n` is zero).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        self
    }

    fn bucket(&self) -> &Arc<str> {
        self.lister.bucket()
    }

    /// One scan: claims in `ledger` and returns what is to be shipped (see
    /// [`Self::scan_into`]).
    pub async fn scan(&mut self, ledger: &Ledger) -> Vec<ObjectRef> {
        let mut sink = Sink::Collect(Vec::new());
        self.scan_into(ledger, &mut sink).await;
        match sink {
            Sink::Collect(found) => found,
            Sink::Feed { .. } => Vec::new(),
        }
    }

    /// One scan: claims in `ledger` and puts what is to be shipped into `sink`, each
    /// prefix's objects as soon as they are claimed, up to the claim limit of each prefix.
    /// Listing errors are logged with their prefix and do not end the scan; the watermark
    /// of a prefix whose listing failed stays where it was.
    pub async fn scan_into(&mut self, ledger: &Ledger, sink: &mut Sink<'_>) -> ScanOutcome {
        let base = layout::base(self.select.expr()).map(|b| match b {
            Base::Literal(s) => Some(s.to_string()),
            Base::Search => None,
        });
        let result = match base {
            Some(base) => self.scan_layout(base.as_deref(), ledger, sink).await,
            None => {
                let mut found = Vec::new();
                let result = self.scan_flat(ledger, &mut found).await;
                sink.put(found).await;
                result.map(|()| ScanOutcome::default())
            }
        };
        result.unwrap_or_else(|e| {
            self.log.error(format_args!("{e}"));
            // Nothing was listed: what the last scans left still waits.
            ScanOutcome {
                left: self.left.values().sum(),
            }
        })
    }

    fn ledger_error(&self, e: crate::ledger::LedgerError) -> DiscoverError {
        DiscoverError {
            location: format!("s3://{}", self.bucket()),
            reason: e.to_string(),
        }
    }

    fn wanted(&self, o: &Listed) -> bool {
        self.select.matches(&o.key) && !o.key.contains(DIGEST_DIR) && o.last_modified >= self.start
    }

    /// Claims the wanted objects of a listing; `forget_by` names their time group, if any.
    fn claim(
        &self,
        ledger: &Ledger,
        listed: &[&Listed],
        forget_by: Option<&str>,
        found: &mut Vec<ObjectRef>,
    ) -> Result<(), DiscoverError> {
        let bucket = self.bucket().clone();
        let ids: Vec<String> = listed.iter().map(|o| s3_id(&bucket, &o.key)).collect();
        let claimable: Vec<Claimable<'_>> = listed
            .iter()
            .zip(&ids)
            .map(|(o, id)| Claimable {
                id,
                size: o.size,
                modified: (o.last_modified.secs(), o.last_modified.nanos()),
                forget_by: forget_by.map(|g| (g, o.last_modified.secs())),
            })
            .collect();
        let now = self.clock.now().secs();
        let claimed = ledger
            .claim(&claimable, now, Honour::Backoff)
            .map_err(|e| self.ledger_error(e))?;
        let claimed: std::collections::HashSet<&str> = claimed.iter().map(|s| &**s).collect();
        for (o, id) in listed.iter().zip(&ids) {
            if claimed.contains(id.as_str()) {
                found.push(ObjectRef::s3(
                    &bucket,
                    o.key.clone(),
                    o.size,
                    o.last_modified,
                ));
            }
        }
        Ok(())
    }

    async fn scan_flat(
        &mut self,
        ledger: &Ledger,
        found: &mut Vec<ObjectRef>,
    ) -> Result<(), DiscoverError> {
        let prefix = self.select.expr().literal_prefix().to_string();
        let group = flat_group(self.bucket(), self.select.expr());
        let floor =
            window::floor(ledger, &group, self.lookback).map_err(|e| self.ledger_error(e))?;
        let listed = self.lister.list_objects(&prefix, None).await?;
        let wanted: Vec<&Listed> = listed
            .iter()
            .filter(|o| self.wanted(o) && floor.is_none_or(|f| o.last_modified.secs() >= f))
            .collect();
        self.claim(ledger, &wanted, Some(&group), found)?;
        let ids: Vec<String> = wanted
            .iter()
            .map(|o| s3_id(self.bucket(), &o.key))
            .collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let holds = ledger
            .holding_watermark(&id_refs)
            .map_err(|e| self.ledger_error(e))?;
        let items: Vec<(u32, bool)> = wanted
            .iter()
            .zip(holds)
            .map(|(o, holds)| (o.last_modified.secs(), !holds))
            .collect();
        window::advance(
            ledger,
            &group,
            self.lookback,
            &items,
            self.clock.now().secs(),
            window::Forget::ByTime,
        )
        .map_err(|e| self.ledger_error(e))
    }

    async fn scan_layout(
        &mut self,
        base: Option<&str>,
        ledger: &Ledger,
        sink: &mut Sink<'_>,
    ) -> Result<ScanOutcome, DiscoverError> {
        let now = self.clock.now().secs();
        let due = self
            .enumerated_at
            .is_none_or(|t| now.saturating_sub(t) >= ENUMERATE_EVERY_SECS);
        if due {
            if self.enumerated_at.is_none() {
                // After a restart, the prefixes listed before are listed again even when
                // the enumeration fails: their watermarks say where.
                let own = s3_id(self.bucket(), "");
                let known = ledger.watermarks().map_err(|e| self.ledger_error(e))?;
                self.regions.extend(
                    known
                        .into_iter()
                        .filter_map(|(p, _)| p.strip_prefix(&own).map(String::from)),
                );
            }
            self.enumerate(base).await;
            self.enumerated_at = Some(now);
        }
        let regions: Vec<String> = self
            .regions
            .iter()
            .filter(|r| self.select.may_match_below(r))
            .cloned()
            .collect();
        // With a shared ledger, this shipper's share of the prefixes (every shipper's
        // enumeration finds them all); alone, every one.
        let own = s3_id(self.bucket(), "");
        let ids: Vec<String> = regions.iter().map(|r| s3_id(self.bucket(), r)).collect();
        let keep = |id: &str| {
            id.strip_prefix(&own)
                .is_some_and(|r| self.select.may_match_below(r))
        };
        let regions: Vec<String> = ledger
            .share_prefixes(&ids, &keep)
            .map_err(|e| self.ledger_error(e))?
            .into_iter()
            .filter_map(|id| id.strip_prefix(&own).map(String::from))
            .collect();
        // Each prefix's listing, claims and watermark are its own: they run side by side,
        // and only the order in which prefixes finish changes. Each prefix's objects go
        // out as it finishes; while the workers are busy, no further listing starts.
        let this = &*self;
        let limit = this.claim_limit.per_prefix(regions.len());
        let mine: BTreeSet<String> = regions.iter().cloned().collect();
        let mut left = Vec::new();
        let mut scans = stream::iter(regions)
            .map(|region| async move {
                let result = this.scan_region(&region, ledger, limit).await;
                (region, result)
            })
            .buffer_unordered(this.concurrency.get());
        while let Some((region, result)) = scans.next().await {
            match result {
                Ok(scanned) => {
                    left.push((region, scanned.left));
                    sink.put(scanned.found).await;
                }
                Err(e) => this.log.error(format_args!("{e}")),
            }
            if sink.is_closed() {
                break;
            }
        }
        drop(scans);
        for (region, n) in left {
            if n == 0 {
                self.left.remove(&region);
            } else {
                self.left.insert(region, n);
            }
        }
        // A prefix no longer listed here (another shipper's now) leaves nothing here.
        self.left.retain(|r, _| mine.contains(r));
        Ok(ScanOutcome {
            left: self.left.values().sum(),
        })
    }

    /// Finds the region prefixes below the layout's base(s). A failed listing is logged and
    /// the prefixes known before are kept.
    async fn enumerate(&mut self, base: Option<&str>) {
        let bases = match base {
            Some(b) => vec![b.to_string()],
            None => self.find_bases().await,
        };
        let mut accounts = Vec::new();
        let mut orgs = Vec::new();
        for base in bases {
            let dirs = match self.lister.list_dirs(&base).await {
                Ok(d) => d,
                Err(e) => {
                    self.log.error(format_args!("{e}"));
                    continue;
                }
            };
            for dir in dirs {
                if !self.select.may_match_below(&dir) {
                    continue;
                }
                if is_account(dir[base.len()..].trim_end_matches('/')) {
                    accounts.push(dir);
                } else {
                    // An organization trail's level (`o-…`): its children are the accounts.
                    orgs.push(dir);
                }
            }
        }
        for (org, children) in self.list_each(orgs).await {
            accounts.extend(children.into_iter().filter(|c| {
                is_account(c[org.len()..].trim_end_matches('/')) && self.select.may_match_below(c)
            }));
        }
        // Each chosen kind's folder under each account (`CloudTrail/`, `CloudTrail-Insight/`, …).
        let trails: Vec<String> = accounts
            .iter()
            .flat_map(|account| {
                let kinds = self.select.kinds().iter();
                kinds.map(move |kind| format!("{account}{}/", kind.folder()))
            })
            .filter(|trail| self.select.may_match_below(trail))
            .collect();
        for (_, regions) in self.list_each(trails).await {
            self.regions.extend(
                regions
                    .into_iter()
                    .filter(|r| self.select.may_match_below(r)),
            );
        }
    }

    /// The sub-"folders" of each prefix, listed [`Self::concurrency`] at a time; a failed
    /// listing is logged and left out.
    async fn list_each(&self, prefixes: Vec<String>) -> Vec<(String, Vec<String>)> {
        stream::iter(prefixes)
            .map(|prefix| async move {
                let dirs = self.lister.list_dirs(&prefix).await;
                (prefix, dirs)
            })
            .buffer_unordered(self.concurrency.get())
            .filter_map(|(prefix, dirs)| async move {
                match dirs {
                    Ok(d) => Some((prefix, d)),
                    Err(e) => {
                        self.log.error(format_args!("{e}"));
                        None
                    }
                }
            })
            .collect()
            .await
    }

    /// The `…AWSLogs/` folders at the top of the bucket and up to [`SEARCH_DEPTH`] folders
    /// below it (trails written under an S3 key prefix).
    async fn find_bases(&self) -> Vec<String> {
        let mut bases = Vec::new();
        let mut level = vec![String::new()];
        for depth in 0..=SEARCH_DEPTH {
            let mut next = Vec::new();
            for prefix in &level {
                let dirs = match self.lister.list_dirs(prefix).await {
                    Ok(d) => d,
                    Err(e) => {
                        self.log.error(format_args!("{e}"));
                        continue;
                    }
                };
                for dir in dirs {
                    if dir[prefix.len()..] == *"AWSLogs/" {
                        bases.push(dir);
                    } else if depth < SEARCH_DEPTH && self.select.may_match_below(&dir) {
                        next.push(dir);
                    }
                }
            }
            level = next;
        }
        bases
    }

    /// Lists one `…/CloudTrail/REGION/` prefix from `lookback` before its watermark's day
    /// (or from `start_time`'s day), claims what is wanted and unfinished (`limit` at most,
    /// in key order), and moves the watermark over the finished keys at the front.
    async fn scan_region(
        &self,
        region: &str,
        ledger: &Ledger,
        limit: usize,
    ) -> Result<RegionScan, DiscoverError> {
        let mut found = Vec::new();
        let bucket = self.bucket().clone();
        let now = self.clock.now().secs();
        let start_day = i64::from(self.start.secs()) / 86_400;
        let lookback_days = i64::from(self.lookback.div_ceil(86_400));
        let prefix_id = s3_id(&bucket, region);
        // Never below the forget line: what was forgotten there is not listed again, even
        // when `lookback` or `start_time` have grown since.
        let floor_day = ledger
            .floor(&prefix_id)
            .map_err(|e| self.ledger_error(e))?
            .and_then(|f| f.strip_prefix(prefix_id.as_str()).and_then(day_of));
        let from_day = |w: Option<&str>| {
            let day = w
                .and_then(|w| w.strip_prefix(prefix_id.as_str()))
                .and_then(key_day)
                .map_or(start_day, |d| (d - lookback_days).max(start_day));
            floor_day.map_or(day, |f| day.max(f))
        };
        let mark = ledger
            .watermark(&prefix_id)
            .map_err(|e| self.ledger_error(e))?;
        let start_after = format!("{region}{}", day_path(from_day(mark.as_deref())));
        ledger
            .prepare_listing(&prefix_id, &s3_id(&bucket, &start_after))
            .map_err(|e| self.ledger_error(e))?;
        let mut listed = self.lister.list_objects(region, Some(&start_after)).await?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));

        // The key's date is CloudTrail's delivery date: one before start_time's day is older
        // than start_time, whatever its LastModified says (copied objects).
        let wanted_at = |o: &Listed| {
            self.wanted(o) && key_day(&o.key[region.len()..]).is_none_or(|d| d >= start_day)
        };
        let wanted: Vec<&Listed> = listed.iter().filter(|o| wanted_at(o)).collect();
        // Which keys are unfinished (new, or open and not tried yet), read before the claim
        // (a key finished now stays finished, so the watermark below may rely on it), in
        // key order up to the `limit`-th unfinished key (those in flight count). The keys
        // after it are neither read (a shared ledger reads a row per key) nor claimed: they
        // wait for a later scan, so the ledger holds a stretch of a backfill.
        let ids: Vec<String> = wanted.iter().map(|o| s3_id(&bucket, &o.key)).collect();
        let mut holds: Vec<bool> = Vec::with_capacity(ids.len());
        let mut unfinished = 0;
        'read: while holds.len() < ids.len() {
            // A shared ledger reads a row per key: no further than the limit needs. The
            // file reads a page in one transaction (an idle scan of thousands of prefixes
            // at 25 each would otherwise make hundreds of thousands of them).
            let n = match ledger.shared() {
                Some(_) => READ_PIECE.min(limit + 1 - unfinished),
                None => READ_PIECE,
            };
            let piece: Vec<&str> = ids[holds.len()..ids.len().min(holds.len() + n)]
                .iter()
                .map(String::as_str)
                .collect();
            for h in ledger
                .holding_watermark(&piece)
                .map_err(|e| self.ledger_error(e))?
            {
                unfinished += usize::from(h);
                if unfinished > limit {
                    break 'read;
                }
                holds.push(h);
            }
        }
        let end = holds.len();
        self.claim(ledger, &wanted[..end], None, &mut found)?;
        let left = wanted.len() - end;

        // The watermark moves over finished keys only, and never into the future: a key
        // dated after tomorrow (a clock gone wrong, a hand-written key) is shipped but does
        // not pull the listing position after it. The keys left past the limit hold it
        // like open ones.
        let open: std::collections::HashSet<&str> = wanted
            .iter()
            .zip(holds.into_iter().chain(std::iter::repeat(true)))
            .filter(|(_, holds)| *holds)
            .map(|(o, _)| o.key.as_str())
            .collect();
        let cap = i64::from(now) / 86_400 + 1;
        let mut to = None;
        for o in &listed {
            if open.contains(o.key.as_str()) {
                break;
            }
            match key_day(&o.key[region.len()..]) {
                Some(day) if day > cap => break,
                Some(_) => to = Some(o.key.as_str()),
                // A finished or unwanted key without a day is passed over, but never
                // becomes the watermark: the listing start is the watermark's day.
                None => {}
            }
        }
        let done = RegionScan { found, left };
        let Some(to) = to else { return Ok(done) };
        let to = s3_id(&bucket, to);
        if mark.as_deref().is_some_and(|m| m >= to.as_str()) {
            return Ok(done);
        }
        let forget_below = format!("{prefix_id}{}", day_path(from_day(Some(&to))));
        ledger
            .advance_at(&prefix_id, &to, &forget_below, now)
            .map_err(|e| self.ledger_error(e))?;
        Ok(done)
    }
}

/// Listed keys are looked up in the ledger this many at a time (a LIST page).
const READ_PIECE: usize = 1_000;

/// One prefix's scan: what it claimed, and how many wanted keys wait past its limit.
struct RegionScan {
    found: Vec<ObjectRef>,
    left: usize,
}

/// The day of a `YYYY/MM/DD` (forget lines end at the day, without its slash).
fn day_of(rest: &str) -> Option<i64> {
    key_day(&format!("{rest}/"))
}

/// The listing horizon of a key's region prefix: keys below it were covered by listings
/// (finished, or older than the lookback), so a notification for one is left to them.
pub fn below_horizon(
    ledger: &Ledger,
    bucket: &str,
    key: &str,
    lookback: u32,
) -> Result<bool, crate::ledger::LedgerError> {
    let Some(region) = layout::region_prefix(key) else {
        return Ok(false);
    };
    let prefix_id = s3_id(bucket, region);
    let lookback_days = i64::from(lookback.div_ceil(86_400));
    let from_mark = ledger
        .watermark(&prefix_id)?
        .and_then(|m| m.strip_prefix(prefix_id.as_str()).and_then(key_day))
        .map(|d| d - lookback_days);
    let from_floor = ledger
        .floor(&prefix_id)?
        .and_then(|f| f.strip_prefix(prefix_id.as_str()).and_then(day_of));
    let Some(day) = from_mark.max(from_floor) else {
        return Ok(false);
    };
    Ok(*key < *format!("{region}{}", day_path(day)))
}

/// The time group a flat listing of `expr` in `bucket` forgets by.
pub fn flat_group(bucket: &str, expr: &PathExpression) -> String {
    format!("flat:{}", s3_id(bucket, expr.literal_prefix()))
}

#[cfg(test)]
mod tests;
